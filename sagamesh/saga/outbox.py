"""Turning a transition's events into outbox messages (for storages with ``supports_outbox``).

``SagaCoordinator(storage, outbox=event_messages())`` writes each transition's events in the same
atomic write as the saga state (Redis Lua script / PostgreSQL transaction); an outbox relay then
publishes them at least once, in order per saga. Messages are exactly what
``SagaEventPublisher`` would have sent: same topic, key, headers and body.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from ..events import SagaEvent
from ..message import Message

OutboxEncoder = Callable[[Sequence[SagaEvent]], Sequence[Message]]
"""What ``SagaCoordinator(outbox=...)`` takes: a transition's events to the messages to store."""


def event_messages(
    topic_prefix: str = "saga.events",
    serializer: str = "json",
    topic_strategy: Literal["single", "per_type"] = "single",
) -> Callable[[Sequence[SagaEvent]], list[Message]]:
    """An encoder for ``SagaCoordinator(outbox=...)``."""
    from ..serialization import get_serializer, to_message

    codec = get_serializer(serializer)
    per_type = topic_strategy == "per_type"

    def encode(events: Sequence[SagaEvent]) -> list[Message]:
        return [
            to_message(e, f"{topic_prefix}.{e.type.value}" if per_type else topic_prefix, codec)
            for e in events
        ]

    return encode
