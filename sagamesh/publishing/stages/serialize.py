"""Validates events and turns them into wire messages (topic by strategy, key = saga id)."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence

from ...errors import InvalidEventError, SerializationError
from ...events import SagaEvent
from ...message import Message
from ...serialization import Serializer, to_message
from ..stage import CallNext, Publication


class SerializeStage:
    """First stage. A publication that already carries messages (a transaction serializes at
    ``publish_event`` time) passes through untouched."""

    name = "serialize"
    __slots__ = ("_per_type", "_prefix", "_topics", "serializer")

    def __init__(self, serializer: Serializer, topic_prefix: str, topic_strategy: str) -> None:
        self.serializer = serializer
        self._prefix = topic_prefix
        self._per_type = topic_strategy == "per_type"
        self._topics: dict[str, str] = {}

    def topic_for(self, event: SagaEvent) -> str:
        if not self._per_type:
            return self._prefix
        kind = str(event.type)
        topic = self._topics.get(kind)
        if topic is None:
            topic = self._topics[kind] = f"{self._prefix}.{kind}"
        return topic

    def encode(self, event: SagaEvent) -> Message:
        """The wire message of one event; InvalidEventError / SerializationError on bad input."""
        if not isinstance(event, SagaEvent):
            raise InvalidEventError(f"expected a SagaEvent, got {type(event).__name__}")
        if not (event.id and event.saga_id and event.type):
            event.validate()
        try:
            return to_message(event, self.topic_for(event), self.serializer)
        except (SerializationError, InvalidEventError):
            raise
        except Exception as exc:  # a serializer must not leak bare errors
            raise SerializationError(f"cannot encode event {event.id}: {exc}") from exc

    def __call__(self, pub: Publication, call_next: CallNext) -> Awaitable[None]:
        """Bad input raises here, before anything is awaited."""
        if not pub.messages:
            events = pub.events
            if len(events) == 1:
                pub.messages = (self.encode(events[0]),)
            else:
                pub.messages = self._encode_all(events)
        return call_next(pub)

    def _encode_all(self, events: Sequence[SagaEvent]) -> list[Message]:
        encode = self.encode
        messages: list[Message] = []
        for index, event in enumerate(events):
            try:
                messages.append(encode(event))
            except (InvalidEventError, SerializationError) as exc:
                raise type(exc)(f"event #{index} ({getattr(event, 'id', '?')}): {exc}") from exc
        return messages
