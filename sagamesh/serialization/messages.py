"""Events to broker messages and back: the envelope every adapter carries."""

from __future__ import annotations

from ..errors import SerializationError
from ..events import SagaEvent
from ..message import Headers, Message
from .base import Serializer
from .registry import BY_CONTENT_TYPE, default_serializer, serializer_for_content_type

_CONTENT_TYPE = Headers.CONTENT_TYPE
_EVENT_ID = Headers.EVENT_ID
_EVENT_TYPE = Headers.EVENT_TYPE
_SAGA_ID = Headers.SAGA_ID


def to_message(event: SagaEvent, topic: str, serializer: Serializer) -> Message:
    """The message that carries ``event`` on ``topic``, keyed by its saga id (publish hot path)."""
    event_id = event.id
    saga_id = event.saga_id
    event_type = event.type
    return Message(
        id=event_id,
        topic=topic,
        body=serializer.encode(event),
        key=saga_id,
        headers={
            _CONTENT_TYPE: serializer.content_type,
            _EVENT_ID: event_id,
            # EventType is a StrEnum; headers carry the plain string value.
            _EVENT_TYPE: event_type._value_ if type(event_type) is not str else event_type,
            _SAGA_ID: saga_id,
        },
    )


def from_message(message: Message) -> SagaEvent:
    """The event in ``message``, decoded by its ``content-type`` (JSON when there is none).

    Raises only :class:`~sagamesh.errors.SerializationError` (bad bytes, unknown content type).
    """
    content_type = message.headers.get(_CONTENT_TYPE)
    if not content_type:
        serializer = default_serializer()
    else:
        factory = BY_CONTENT_TYPE.get(content_type)
        serializer = factory() if factory is not None else serializer_for_content_type(content_type)
    body = message.body
    if body.__class__ is not bytes:
        if not isinstance(body, bytes | bytearray | memoryview):
            raise SerializationError(f"message body is {type(body).__name__}, expected bytes")
        body = bytes(body)
    return serializer.decode(body)
