"""A FastStream app that consumes sagamesh saga events with an EventRouter.

Run it against NATS (any sagamesh publisher on the same broker feeds it):

    faststream run examples.faststream_app:app          # or: python examples/faststream_app.py
    SAGAMESH_NATS_URL=nats://127.0.0.1:4222              # where (default shown)

The router gets exactly what ``EventConsumer`` would give it: routing by type and priority,
filters, per-saga order, retries with the policy's delays (``ctx.attempt`` counts), and the
DLQ (``orders.dlq``, read with ``sagamesh dlq list``). AsyncAPI shows the mounted subscriber:
``faststream docs serve examples.faststream_app:app``. Swap ``NatsBroker`` for ``RabbitBroker``
or ``KafkaBroker`` and nothing else changes.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter

from faststream import FastStream
from faststream.nats import NatsBroker

from sagamesh.consuming import (
    ConsumerConfig,
    EventRouter,
    HandlerContext,
    MemoryIdempotencyStore,
    MetadataFilter,
    RoutingStrategy,
)
from sagamesh.events import EventType, SagaEvent
from sagamesh.faststream import mount
from sagamesh.retry import ExponentialBackoffRetryPolicy

broker = NatsBroker(os.environ.get("SAGAMESH_NATS_URL", "nats://127.0.0.1:4222"))
app = FastStream(broker)
router = EventRouter(strategy=RoutingStrategy.BY_PRIORITY)
outcomes: Counter[str] = Counter()


@router.handler(EventType.SAGA_COMPLETED, EventType.SAGA_FAILED, priority=10,
                filters=[MetadataFilter(tenant="acme")], handler_id="acme-outcomes")
async def acme_outcome(event: SagaEvent, ctx: HandlerContext) -> None:
    """Our biggest tenant gets its own handler (it wins under BY_PRIORITY)."""
    outcomes[f"acme:{event.type.value}"] += 1


@router.handler(EventType.SAGA_COMPLETED, EventType.SAGA_FAILED, handler_id="outcomes")
async def outcome(event: SagaEvent, ctx: HandlerContext) -> None:
    outcomes[event.type.value] += 1
    print(f"saga {event.saga_id}: {event.type.value} (attempt {ctx.attempt})")


mounted = mount(
    broker, router,
    ConsumerConfig(topic_prefix="saga.events", group="order-outcomes",
                   retry=ExponentialBackoffRetryPolicy(5, 0.2, 10), dlq_topic="orders.dlq",
                   idempotency=MemoryIdempotencyStore(ttl=3600)),
    app=app)


if __name__ == "__main__":
    asyncio.run(app.run())
