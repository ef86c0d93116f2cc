"""JSON serializer (msgspec), wire-compatible with the seed Go framework.

The seed writes ``duration`` as integer nanoseconds (Go's ``time.Duration``) where msgspec would
write an ISO 8601 string. So that this costs (almost) nothing:

* decode goes into ``_WireEvent``, a mirror of :class:`SagaEvent` with the same fields in the same
  order (built from it, so they cannot drift) except that ``duration`` is an int. The decoded
  object's class is then switched to ``SagaEvent`` (same memory layout) and its duration set: no
  copy of the 22 other fields. Should a msgspec release ever refuse the switch, a copying
  conversion takes over (checked once at import).
* encode writes events without a duration straight from the Struct; for one with a duration it
  encodes a private copy whose ``duration`` holds the int (msgspec writes values by their
  runtime type).

Timestamps are RFC 3339 and written in UTC; offsets and nanosecond fractions are accepted on
decode (fractions rounded to the microsecond a ``datetime`` holds) and normalised to UTC.
"""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any, Final

import msgspec
from msgspec.structs import force_setattr, replace

from ..errors import SerializationError
from ..events import SagaError, SagaEvent
from ._mirror import NO_DURATION, class_switch_works, copy_fields
from ._time import as_utc, duration_to_ns

CONTENT_TYPE: Final = "application/json"

_FIELDS: Final = msgspec.structs.fields(SagaEvent)
_NO_DURATION: Final = NO_DURATION
_ONE_US: Final = timedelta(microseconds=1)


def _wire_field(field: msgspec.structs.FieldInfo) -> tuple[Any, ...]:
    if field.name == "duration":
        # Absent -> the SagaEvent default object itself (not validated: defaults never are).
        return ("duration", int, _NO_DURATION)
    if field.name == "id":  # on the wire an event must name itself
        return ("id", str)
    if field.default is not msgspec.NODEFAULT:
        return (field.name, field.type, field.default)
    if field.default_factory is not msgspec.NODEFAULT:
        return (field.name, field.type, msgspec.field(default_factory=field.default_factory))
    return (field.name, field.type)


_WireEvent: Any = msgspec.defstruct(
    "_WireEvent", [_wire_field(f) for f in _FIELDS], kw_only=True, omit_defaults=True
)


_SWITCH_CLASS: Final = class_switch_works(_WireEvent, id="probe", saga_id="probe", type="x")


def _utc_error(error: SagaError) -> SagaError:
    """The error with every timestamp of its cause chain in UTC (the same object if already)."""
    cause = error.cause
    utc_cause = _utc_error(cause) if cause is not None else None
    if error.timestamp.tzinfo is UTC and utc_cause is cause:
        return error
    return replace(error, timestamp=as_utc(error.timestamp), cause=utc_cause)


def _wire_copy(event: SagaEvent) -> SagaEvent:
    """A private copy holding what goes on the wire: duration as int nanoseconds, UTC times.

    msgspec encodes a field by its value's runtime type, so an int in ``duration`` is written
    as a JSON integer; the copy never leaves this module.
    """
    duration = event.duration
    wire_duration: Any = duration_to_ns(duration) if duration else _NO_DURATION
    if event.error is None and event.timestamp.tzinfo is UTC:
        return replace(event, duration=wire_duration)
    error = None if event.error is None else _utc_error(event.error)
    return replace(event, duration=wire_duration, timestamp=as_utc(event.timestamp), error=error)


class JsonSerializer:
    """The default serializer: msgspec JSON with a typed decode into :class:`SagaEvent`."""

    __slots__ = ("_decode", "_encode")

    name: str = "json"
    content_type: str = CONTENT_TYPE

    def __init__(self) -> None:
        self._encode = msgspec.json.Encoder().encode
        self._decode = msgspec.json.Decoder(_WireEvent).decode

    def encode(self, event: SagaEvent) -> bytes:
        try:
            if event.error is None and event.timestamp.tzinfo is UTC:
                duration = event.duration
                if duration is _NO_DURATION:
                    return self._encode(event)
                # A private copy with the nanoseconds in place (msgspec writes the int as is).
                ns: Any = (
                    (
                        (duration.days * 86_400 + duration.seconds) * 1_000_000
                        + duration.microseconds
                    )
                    * 1000
                    if duration
                    else _NO_DURATION
                )
                return self._encode(replace(event, duration=ns))
            return self._encode(_wire_copy(event))
        except (TypeError, ValueError, OverflowError, AttributeError, RecursionError) as exc:
            raise SerializationError(f"cannot encode event as JSON: {exc}") from exc

    def decode(self, data: bytes) -> SagaEvent:
        try:
            wire = self._decode(data)
        except (msgspec.DecodeError, ValueError, TypeError, RecursionError) as exc:
            # DecodeError includes ValidationError; ValueError covers invalid UTF-8 in strings
            raise SerializationError(f"invalid JSON event: {exc}") from exc
        duration = wire.duration
        if duration.__class__ is int:  # present on the wire, in nanoseconds
            if duration:
                try:  # ns_to_duration, inlined: this is the hot path
                    wire.duration = _ONE_US * ((duration + 500) // 1000)
                except OverflowError as exc:
                    raise SerializationError(
                        f"invalid JSON event: duration {duration} ns is out of range"
                    ) from exc
            else:
                wire.duration = _NO_DURATION
        event: SagaEvent
        if _SWITCH_CLASS:
            wire.__class__ = SagaEvent
            event = wire
        else:  # pragma: no cover - see _mirror.class_switch_works
            event = copy_fields(wire)
        if not event.saga_id or not event.id:
            missing = "id" if not event.id else "saga_id"
            raise SerializationError(f"invalid JSON event: {missing} is empty")
        if event.timestamp.tzinfo is not UTC:
            force_setattr(event, "timestamp", as_utc(event.timestamp))
        if event.error is not None:
            error = _utc_error(event.error)
            if error is not event.error:
                force_setattr(event, "error", error)
        return event
