"""JSON serializer (msgspec), wire-compatible with the seed Go framework.

The seed writes ``duration`` as integer nanoseconds (Go's ``time.Duration``) where msgspec would
write an ISO 8601 string, so the hot path decodes straight into the frozen :class:`SagaEvent` and
only events that carry a duration take a detour:

* encode: the event is encoded without its duration and ``,"duration":<ns>}`` is appended (JSON
  key order is free), so the common case pays nothing;
* decode: our own spliced form is recognised at the tail (a digit before the closing brace); any
  other placement (the seed puts ``duration`` mid-object) falls back to a mirror Struct whose
  ``duration`` is an int.

Timestamps are RFC 3339, written in UTC; offsets and nanosecond fractions are accepted on decode
(fractions are rounded to the microsecond a ``datetime`` holds).
"""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any, Final

import msgspec
from msgspec.structs import force_setattr, replace

from ..errors import SerializationError
from ..events import SagaError, SagaEvent
from ._time import as_utc, duration_to_ns, ns_to_duration

CONTENT_TYPE: Final = "application/json"

_FIELDS = msgspec.structs.fields(SagaEvent)
# The default object itself: msgspec omits a default by identity, not by equality.
_NO_DURATION: Final[timedelta] = next(f.default for f in _FIELDS if f.name == "duration")
_DURATION_KEY: Final = b',"duration":'
_TAIL_WINDOW: Final = 40


def _wire_field(field: msgspec.structs.FieldInfo) -> tuple[Any, ...]:
    if field.name == "duration":
        return ("duration", int, 0)
    if field.name == "id":  # on the wire an event must name itself
        return ("id", str)
    if field.default is not msgspec.NODEFAULT:
        return (field.name, field.type, field.default)
    if field.default_factory is not msgspec.NODEFAULT:
        return (field.name, field.type, msgspec.field(default_factory=field.default_factory))
    return (field.name, field.type)


# Same fields as SagaEvent (kept in step by construction), duration as nanoseconds.
_WireEvent: Any = msgspec.defstruct(
    "_WireEvent", [_wire_field(f) for f in _FIELDS], kw_only=True, omit_defaults=True
)
_FIELD_NAMES: Final = tuple(f.name for f in _FIELDS)


def _utc_error(error: SagaError) -> SagaError:
    """The error with every timestamp in its cause chain in UTC (the same object if already)."""
    cause = error.cause
    utc_cause = _utc_error(cause) if cause is not None else None
    if error.timestamp.tzinfo is UTC and utc_cause is cause:
        return error
    return replace(error, timestamp=as_utc(error.timestamp), cause=utc_cause)


def _normalise(event: SagaEvent) -> SagaEvent:
    """Put decoded timestamps in UTC in place (the event is fresh from the decoder)."""
    if event.timestamp.tzinfo is not UTC:
        force_setattr(event, "timestamp", as_utc(event.timestamp))
    if event.error is not None:
        error = _utc_error(event.error)
        if error is not event.error:
            force_setattr(event, "error", error)
    return event


class JsonSerializer:
    """The default serializer: msgspec JSON with a typed decode into :class:`SagaEvent`."""

    __slots__ = ("_decoder", "_encoder", "_wire_decoder")

    name: str = "json"
    content_type: str = CONTENT_TYPE

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(SagaEvent)
        self._wire_decoder = msgspec.json.Decoder(_WireEvent)

    def encode(self, event: SagaEvent) -> bytes:
        try:
            if event.duration or event.error is not None or event.timestamp.tzinfo is not UTC:
                return self._encode_slow(event)
            return self._encoder.encode(event)
        except (TypeError, ValueError, OverflowError, AttributeError) as exc:
            raise SerializationError(f"cannot encode event as JSON: {exc}") from exc

    def _encode_slow(self, event: SagaEvent) -> bytes:
        changes: dict[str, Any] = {}
        ns = duration_to_ns(event.duration) if event.duration else 0
        if ns or event.duration is not _NO_DURATION:
            changes["duration"] = _NO_DURATION
        if event.timestamp.tzinfo is not UTC:
            changes["timestamp"] = as_utc(event.timestamp)
        if event.error is not None:
            error = _utc_error(event.error)
            if error is not event.error:
                changes["error"] = error
        body = self._encoder.encode(replace(event, **changes) if changes else event)
        if ns:
            return b"%b,\"duration\":%d}" % (body[:-1], ns)
        return body

    def decode(self, data: bytes) -> SagaEvent:
        if type(data) is not bytes:
            data = _as_bytes(data)
        try:
            if len(data) > 2 and 48 <= data[-2] <= 57:  # a number closes the object
                at = data.rfind(_DURATION_KEY, len(data) - _TAIL_WINDOW)
                if at > 0:
                    spliced = self._decode_spliced(data, at)
                    if spliced is not None:
                        return spliced
            event = self._decoder.decode(data)
        except msgspec.ValidationError:
            return self._decode_wire(data)
        except msgspec.DecodeError as exc:
            raise SerializationError(f"invalid JSON event: {exc}") from exc
        _require_ids(event)
        if event.timestamp.tzinfo is not UTC or event.error is not None:
            return _normalise(event)
        return event

    def _decode_spliced(self, data: bytes, at: int) -> SagaEvent | None:
        try:
            ns = int(data[at + len(_DURATION_KEY) : -1])
        except ValueError:
            return None  # a nested "duration" key, not ours
        event = self._decoder.decode(data[:at] + b"}")
        force_setattr(event, "duration", ns_to_duration(ns))
        _require_ids(event)
        return _normalise(event)

    def _decode_wire(self, data: bytes) -> SagaEvent:
        try:
            wire = self._wire_decoder.decode(data)
        except msgspec.DecodeError as exc:  # ValidationError included
            raise SerializationError(f"invalid JSON event: {exc}") from exc
        values = {name: getattr(wire, name) for name in _FIELD_NAMES}
        try:
            values["duration"] = ns_to_duration(wire.duration)
        except OverflowError as exc:
            raise SerializationError(
                f"invalid JSON event: duration {wire.duration} ns is out of range"
            ) from exc
        event = SagaEvent(**values)
        _require_ids(event)
        return _normalise(event)


def _as_bytes(data: object) -> bytes:
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise SerializationError(f"cannot decode {type(data).__name__}: expected bytes")



def _require_ids(event: SagaEvent) -> None:
    if not event.saga_id or not event.id:
        missing = "id" if not event.id else "saga_id"
        raise SerializationError(f"invalid JSON event: {missing} is empty")
