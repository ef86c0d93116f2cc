"""Conversions between the seed framework's wire forms and Python time values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

_ONE_US: Final = timedelta(microseconds=1)


def duration_to_ns(value: timedelta) -> int:
    """Integer nanoseconds, as Go's ``time.Duration`` puts it on the wire (exact)."""
    return ((value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds) * 1000


def ns_to_duration(ns: int) -> timedelta:
    """A timedelta from nanoseconds, rounded half up to the microsecond timedelta can hold.

    Multiplying a timedelta is several times cheaper than calling the constructor.
    """
    return _ONE_US * ((ns + 500) // 1000)


def as_utc(value: datetime) -> datetime:
    """The same instant in UTC; a naive datetime is taken to be UTC already."""
    tz = value.tzinfo
    if tz is UTC:
        return value
    if tz is None or tz.utcoffset(value) is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
