"""Protobuf serializer on the seed framework's envelope (``_proto/saga_event.proto``).

Payloads travel as JSON bytes (msgspec) inside the envelope: far cheaper than
``google.protobuf.Struct`` and still exact. The generated module is imported only when this
serializer is first used.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec

from ..errors import SerializationError
from ..events import ErrorType, EventType, SagaError, SagaEvent
from ._mirror import NO_DURATION, class_switch_works, copy_fields
from ._time import duration_to_ns, ns_to_duration
from .registry import PROTOBUF_CONTENT_TYPE

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)
_EVENT_TYPES: Final[dict[str, EventType]] = {t.value: t for t in EventType}
_ERROR_TYPES: Final[dict[str, ErrorType]] = {t.value: t for t in ErrorType}
_ERROR_TYPES[""] = ErrorType.SYSTEM  # the seed's errors carry no type
# SagaEvent's fields in its order, as plain positional arguments (see _mirror).
_POSITIONAL_ORDER: Final = (
    "saga_id", "type", "id", "step_id", "version", "timestamp", "correlation_id", "data",
    "previous_state", "new_state", "error", "duration", "attempt", "max_attempts", "metadata",
    "source", "service", "service_version", "trace_id", "span_id", "parent_span_id",
    "instance_id",
)  # fmt: skip
_PositionalEvent: Any = msgspec.defstruct(
    "_PositionalEvent", [(name, object) for name in _POSITIONAL_ORDER]
)
_FAST_BUILD: Final = class_switch_works(_PositionalEvent, **dict.fromkeys(_POSITIONAL_ORDER, None))


class ProtobufSerializer:
    """Smaller than JSON on the wire; the seed's Go services read fields 1-21."""

    __slots__ = ("_Error", "_Event", "_json_decode", "_json_encode")

    name: str = "protobuf"
    content_type: str = PROTOBUF_CONTENT_TYPE

    def __init__(self) -> None:
        from ._proto import saga_event_pb2

        self._Event: Any = saga_event_pb2.SagaEvent
        self._Error: Any = saga_event_pb2.SagaError
        self._json_encode = msgspec.json.Encoder().encode
        self._json_decode = msgspec.json.Decoder().decode

    # -- encode ---------------------------------------------------------------------------

    def encode(self, event: SagaEvent) -> bytes:
        try:
            return self._encode(event)
        except (TypeError, ValueError, OverflowError, AttributeError) as exc:
            raise SerializationError(f"cannot encode event as protobuf: {exc}") from exc

    def _encode(self, event: SagaEvent) -> bytes:
        # Only non-empty fields are set: each assignment costs as much as a constructor keyword.
        json_encode = self._json_encode
        msg = self._Event(id=event.id, saga_id=event.saga_id, type=event.type)
        if event.version:
            msg.version = event.version
        if event.step_id:
            msg.step_id = event.step_id
        _set_timestamp(msg.timestamp, event.timestamp)
        if event.correlation_id:
            msg.correlation_id = event.correlation_id
        if event.data is not None:
            msg.data = json_encode(event.data)
        if event.previous_state is not None:
            msg.previous_state = json_encode(event.previous_state)
        if event.new_state is not None:
            msg.new_state = json_encode(event.new_state)
        if event.error is not None:
            msg.error.CopyFrom(self._error(event.error))
        if event.duration:
            msg.duration = duration_to_ns(event.duration)
        if event.attempt:
            msg.attempt = event.attempt
        if event.max_attempts:
            msg.max_attempts = event.max_attempts
        metadata = event.metadata
        if metadata:
            strings = msg.metadata
            others = msg.metadata_json
            for key, value in metadata.items():
                if type(value) is str:
                    strings[key] = value
                else:
                    others[key] = json_encode(value)
        if event.source:
            msg.source = event.source
        if event.service:
            msg.service = event.service
        if event.service_version:
            msg.service_version = event.service_version
        if event.trace_id:
            msg.trace_id = event.trace_id
        if event.span_id:
            msg.span_id = event.span_id
        if event.parent_span_id:
            msg.parent_span_id = event.parent_span_id
        if event.instance_id:
            msg.instance_id = event.instance_id
        body: bytes = msg.SerializeToString()
        return body

    def _error(self, error: SagaError) -> Any:
        msg = self._Error(
            code=error.code,
            message=error.message,
            retryable=error.retryable,
            details=self._json_encode(error.details).decode() if error.details else "",
            type=error.type,
            cause=None if error.cause is None else self._error(error.cause),
        )
        _set_timestamp(msg.timestamp, error.timestamp)
        return msg

    # -- decode ---------------------------------------------------------------------------

    def decode(self, data: bytes) -> SagaEvent:
        try:
            msg = self._Event.FromString(data)
        except Exception as exc:  # the runtime raises DecodeError, TypeError, ...
            raise SerializationError(f"invalid protobuf event: {exc}") from exc
        try:
            return self._decode(msg)
        except SerializationError:
            raise
        except (msgspec.DecodeError, ValueError, OverflowError, TypeError, RecursionError) as exc:
            raise SerializationError(f"invalid protobuf event: {exc}") from exc

    def _decode(self, msg: Any) -> SagaEvent:
        event_type = _EVENT_TYPES.get(msg.type)
        if event_type is None:
            raise SerializationError(f"invalid protobuf event: unknown event type {msg.type!r}")
        event_id = msg.id
        saga_id = msg.saga_id
        if not event_id or not saga_id:
            missing = "id" if not event_id else "saga_id"
            raise SerializationError(f"invalid protobuf event: {missing} is empty")
        json_decode = self._json_decode
        data = msg.data
        previous_state = msg.previous_state
        new_state = msg.new_state
        strings = msg.metadata
        metadata: dict[str, Any] = {key: strings[key] for key in strings} if strings else {}
        others = msg.metadata_json
        if others:
            for key in others:
                metadata[key] = json_decode(others[key])
        duration = msg.duration
        # Positional, in _POSITIONAL_ORDER.
        event = _PositionalEvent(
            saga_id,
            event_type,
            event_id,
            msg.step_id,
            msg.version,
            _datetime(msg.timestamp) if msg.HasField("timestamp") else _now(),
            msg.correlation_id,
            json_decode(data) if data else None,
            json_decode(previous_state) if previous_state else None,
            json_decode(new_state) if new_state else None,
            self._decode_error(msg.error) if msg.HasField("error") else None,
            ns_to_duration(duration) if duration else NO_DURATION,
            msg.attempt,
            msg.max_attempts,
            metadata,
            msg.source,
            msg.service,
            msg.service_version,
            msg.trace_id,
            msg.span_id,
            msg.parent_span_id,
            msg.instance_id,
        )
        if _FAST_BUILD:
            event.__class__ = SagaEvent
            return event  # type: ignore[no-any-return]
        return copy_fields(event)  # pragma: no cover - see _mirror

    def _decode_error(self, msg: Any) -> SagaError:
        error_type = _ERROR_TYPES.get(msg.type)
        if error_type is None:
            raise SerializationError(f"invalid protobuf event: unknown error type {msg.type!r}")
        details = self._json_decode(msg.details) if msg.details else {}
        if type(details) is not dict:
            raise SerializationError("invalid protobuf event: error details is not an object")
        return SagaError(
            code=msg.code,
            message=msg.message,
            type=error_type,
            retryable=msg.retryable,
            timestamp=_datetime(msg.timestamp) if msg.HasField("timestamp") else _now(),
            details=details,
            cause=self._decode_error(msg.cause) if msg.HasField("cause") else None,
        )


def _set_timestamp(timestamp: Any, value: datetime) -> None:
    """Fill a Timestamp in place (cheaper than building one and copying it in)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    timestamp.seconds = delta.days * 86_400 + delta.seconds
    timestamp.nanos = delta.microseconds * 1000


def _datetime(timestamp: Any) -> datetime:
    """UTC datetime of a Timestamp, nanoseconds rounded half up to the microsecond."""
    micros: int = timestamp.seconds * 1_000_000 + (timestamp.nanos + 500) // 1000
    return _EPOCH + _ONE_US * micros


def _now() -> datetime:
    return datetime.now(UTC)
