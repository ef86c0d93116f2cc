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
from ._time import duration_to_ns, ns_to_duration
from .registry import PROTOBUF_CONTENT_TYPE

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_EVENT_TYPES: Final[dict[str, EventType]] = {t.value: t for t in EventType}
_ERROR_TYPES: Final[dict[str, ErrorType]] = {t.value: t for t in ErrorType}
_ERROR_TYPES[""] = ErrorType.SYSTEM  # the seed's errors carry no type


class ProtobufSerializer:
    """Smaller than JSON on the wire; the seed's Go services read fields 1-21."""

    __slots__ = ("_Error", "_Event", "_Timestamp", "_json_decode", "_json_encode")

    name: str = "protobuf"
    content_type: str = PROTOBUF_CONTENT_TYPE

    def __init__(self) -> None:
        from google.protobuf.timestamp_pb2 import Timestamp

        from ._proto import saga_event_pb2

        self._Event: Any = saga_event_pb2.SagaEvent
        self._Error: Any = saga_event_pb2.SagaError
        self._Timestamp: Any = Timestamp
        self._json_encode = msgspec.json.Encoder().encode
        self._json_decode = msgspec.json.Decoder().decode

    # -- encode ---------------------------------------------------------------------------

    def encode(self, event: SagaEvent) -> bytes:
        try:
            return self._encode(event)
        except (TypeError, ValueError, OverflowError, AttributeError) as exc:
            raise SerializationError(f"cannot encode event as protobuf: {exc}") from exc

    def _encode(self, event: SagaEvent) -> bytes:
        json_encode = self._json_encode
        data = event.data
        previous_state = event.previous_state
        new_state = event.new_state
        msg = self._Event(
            id=event.id,
            saga_id=event.saga_id,
            step_id=event.step_id,
            type=event.type,
            version=event.version,
            timestamp=self._timestamp(event.timestamp),
            correlation_id=event.correlation_id,
            data=b"" if data is None else json_encode(data),
            previous_state=b"" if previous_state is None else json_encode(previous_state),
            new_state=b"" if new_state is None else json_encode(new_state),
            attempt=event.attempt,
            max_attempts=event.max_attempts,
            source=event.source,
            service=event.service,
            service_version=event.service_version,
            trace_id=event.trace_id,
            span_id=event.span_id,
            parent_span_id=event.parent_span_id,
            instance_id=event.instance_id,
        )
        if event.duration:
            msg.duration = duration_to_ns(event.duration)
        if event.error is not None:
            msg.error.CopyFrom(self._error(event.error))
        metadata = event.metadata
        if metadata:
            strings = msg.metadata
            others = msg.metadata_json
            for key, value in metadata.items():
                if type(value) is str:
                    strings[key] = value
                else:
                    others[key] = json_encode(value)
        body: bytes = msg.SerializeToString()
        return body

    def _timestamp(self, value: datetime) -> Any:
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        delta = value - _EPOCH
        return self._Timestamp(
            seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1000
        )

    def _error(self, error: SagaError) -> Any:
        return self._Error(
            code=error.code,
            message=error.message,
            retryable=error.retryable,
            details=self._json_encode(error.details).decode() if error.details else "",
            type=error.type,
            timestamp=self._timestamp(error.timestamp),
            cause=None if error.cause is None else self._error(error.cause),
        )

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
        if not msg.id or not msg.saga_id:
            missing = "id" if not msg.id else "saga_id"
            raise SerializationError(f"invalid protobuf event: {missing} is empty")
        json_decode = self._json_decode
        data = msg.data
        previous_state = msg.previous_state
        new_state = msg.new_state
        metadata: dict[str, Any] = dict(msg.metadata) if msg.metadata else {}
        if msg.metadata_json:
            for key, value in msg.metadata_json.items():
                metadata[key] = json_decode(value)
        return SagaEvent(
            id=msg.id,
            saga_id=msg.saga_id,
            step_id=msg.step_id,
            type=event_type,
            version=msg.version,
            timestamp=_datetime(msg.timestamp) if msg.HasField("timestamp") else _now(),
            correlation_id=msg.correlation_id,
            data=json_decode(data) if data else None,
            previous_state=json_decode(previous_state) if previous_state else None,
            new_state=json_decode(new_state) if new_state else None,
            error=self._decode_error(msg.error) if msg.HasField("error") else None,
            duration=ns_to_duration(msg.duration) if msg.duration else timedelta(0),
            attempt=msg.attempt,
            max_attempts=msg.max_attempts,
            metadata=metadata,
            source=msg.source,
            service=msg.service,
            service_version=msg.service_version,
            trace_id=msg.trace_id,
            span_id=msg.span_id,
            parent_span_id=msg.parent_span_id,
            instance_id=msg.instance_id,
        )

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


def _datetime(timestamp: Any) -> datetime:
    """UTC datetime of a Timestamp, nanoseconds rounded half up to the microsecond."""
    return _EPOCH + timedelta(0, timestamp.seconds, (timestamp.nanos + 500) // 1000)


def _now() -> datetime:
    return datetime.now(UTC)
