"""Conversions between the seed framework's wire forms and Python time values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_NS_PER_US = 1000
_US_PER_DAY = 86_400_000_000


def duration_to_ns(value: timedelta) -> int:
    """Integer nanoseconds, as Go's ``time.Duration`` puts it on the wire (exact)."""
    return ((value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds) * _NS_PER_US


def ns_to_duration(ns: int) -> timedelta:
    """A timedelta from nanoseconds, rounded half up to the microsecond timedelta can hold."""
    return timedelta(microseconds=(ns + 500) // _NS_PER_US)


def as_utc(value: datetime) -> datetime:
    """The same instant in UTC; a naive datetime is taken to be UTC already."""
    tz = value.tzinfo
    if tz is UTC:
        return value
    if tz is None or tz.utcoffset(value) is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
