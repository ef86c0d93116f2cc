"""Turning saga events into outbox messages, exactly as the publisher would send them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..events import SagaEvent
from ..message import Message
from ..serialization import Serializer, get_serializer


def saga_event_encoder(
    topic_prefix: str = "saga.events",
    *,
    serializer: str | Serializer = "json",
    topic_strategy: str = "single",
) -> Callable[[Sequence[SagaEvent]], list[Message]]:
    """The ``outbox=`` argument of :class:`~sagamesh.saga.coordinator.SagaCoordinator`: events
    become the same messages ``SagaEventPublisher`` would publish (topic, key = saga id, headers),
    so consumers cannot tell relayed events from directly published ones."""
    from ..publishing.stages.serialize import SerializeStage

    stage = SerializeStage(
        get_serializer(serializer) if isinstance(serializer, str) else serializer,
        topic_prefix,
        topic_strategy,
    )
    encode = stage.encode

    def encode_all(events: Sequence[SagaEvent]) -> list[Message]:
        return [encode(e) for e in events]

    return encode_all
