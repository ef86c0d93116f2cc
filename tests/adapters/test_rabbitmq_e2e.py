"""The publisher and consumer run unchanged on RabbitMQ: 5,000 saga events published in batches,
consumed through an EventRouter with per-saga ordering, retries and a DLQ."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator

import aio_pika
import pytest
import pytest_asyncio
from sagamesh_rabbitmq import RabbitBroker

from sagamesh.consuming import ConsumerConfig, EventConsumer, EventRouter, HandlerContext
from sagamesh.events import EventType, SagaEvent
from sagamesh.message import Headers
from sagamesh.publishing import PublisherConfig, SagaEventPublisher
from sagamesh.retry import ExponentialBackoffRetryPolicy
from sagamesh.testing.conformance import Collector

pytestmark = pytest.mark.rabbitmq

SAGAS = 250
STEPS = 20  # events per saga: 250 x 20 = 5,000


@pytest_asyncio.fixture
async def broker(amqp_url: str, unique: str) -> AsyncIterator[RabbitBroker]:
    rabbit = RabbitBroker(amqp_url, exchange=f"e2e-{unique}")
    await rabbit.connect()
    try:
        yield rabbit
    finally:
        queues = rabbit.declared_queues()
        await rabbit.close()
        connection = await aio_pika.connect(amqp_url)
        try:
            channel = await connection.channel()
            for name in queues:
                with contextlib.suppress(Exception):
                    await channel.queue_delete(name)
            with contextlib.suppress(Exception):
                await channel.exchange_delete(rabbit.exchange)
        finally:
            await connection.close()


def _events(unique: str) -> list[SagaEvent]:
    """Step n of every saga is published before step n+1 (interleaved across sagas)."""
    return [
        SagaEvent(saga_id=f"saga-{unique}-{s}", step_id=f"step-{n}",
                  type=EventType.SAGA_STEP_COMPLETED, metadata={"seq": str(n)})
        for n in range(STEPS) for s in range(SAGAS)
    ]


async def test_5000_saga_events_in_order_with_retries_and_dlq(
    broker: RabbitBroker, unique: str
) -> None:
    topic, dlq_topic = f"saga.events.{unique}", f"saga.dlq.{unique}"
    events = _events(unique)
    flaky = {e.id for i, e in enumerate(events) if i % 97 == 0}  # fail once, then succeed
    poison = {e.id for i, e in enumerate(events) if i % 1000 == 500}  # always fail -> DLQ
    handled: dict[str, list[int]] = defaultdict(list)
    attempts: dict[str, list[int]] = defaultdict(list)
    done = asyncio.Event()
    expected = len(events) - len(poison)

    router = EventRouter()

    @router.handler(EventType.SAGA_STEP_COMPLETED, handler_id="steps")
    async def on_step(event: SagaEvent, ctx: HandlerContext) -> None:
        attempts[event.id].append(ctx.attempt)
        if event.id in poison or (event.id in flaky and ctx.attempt == 1):
            raise RuntimeError("handler failed (expected)")
        handled[event.saga_id].append(int(event.metadata["seq"]))
        if sum(len(v) for v in handled.values()) == expected:
            done.set()

    dead = Collector()
    await broker.subscribe(dlq_topic, dead.handler(), group="dlq-reader")
    config = ConsumerConfig(
        topic_prefix=topic, group=f"orders-{unique}", ordering="per_saga", max_in_flight=256,
        retry=ExponentialBackoffRetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.2),
        dlq_topic=dlq_topic)
    publisher = SagaEventPublisher(broker, PublisherConfig(topic_prefix=topic))
    async with EventConsumer(broker, router, config):
        for start in range(0, len(events), 500):
            result = await publisher.publish_batch(events[start:start + 500])
            assert result.published_count == 500 and result.error is None
        await asyncio.wait_for(done.wait(), 120)
        await dead.wait_until(lambda: len(dead.acked_ids()) >= len(poison), "DLQ copies", 60)
    await publisher.close()

    assert sum(len(v) for v in handled.values()) == expected
    for saga_id, seqs in handled.items():  # per-saga order, each step exactly once
        want = list(range(STEPS))
        if saga_id in {e.saga_id for e in events if e.id in poison}:
            bad = {int(e.metadata["seq"]) for e in events
                   if e.id in poison and e.saga_id == saga_id}
            want = [n for n in want if n not in bad]
        assert seqs == want, f"{saga_id}: {seqs}"
    for event_id in flaky - poison:
        assert attempts[event_id] == [1, 2]
    assert dead.acked_ids() == poison
    for record in dead.acked:
        assert attempts[record.message.id] == [1, 2, 3]
        assert record.message.headers[Headers.ORIGINAL_TOPIC] == topic
        assert record.message.headers[Headers.ATTEMPTS] == "3"
        assert "RuntimeError" in record.message.headers[Headers.DLQ_REASON]
