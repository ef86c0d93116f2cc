"""The publisher and consumer run unchanged on every broker.

Per broker: 5,000 saga events (250 sagas x 20 steps, interleaved) are published in batches through
``SagaEventPublisher`` and consumed through an ``EventRouter`` + ``EventConsumer`` with per-saga
ordering; some events fail once (redelivered after the retry delay) and a few always fail (dead-
lettered after 3 attempts). Asserted: every other event handled exactly once, in saga order, the
flaky ones on attempt 2, and the DLQ holds exactly the poison events with the reason headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from sagamesh.brokers.base import Broker
from sagamesh.brokers.memory import MemoryBroker
from sagamesh.consuming import ConsumerConfig, EventConsumer, EventRouter, HandlerContext
from sagamesh.events import EventType, SagaEvent
from sagamesh.message import Headers
from sagamesh.publishing import PublisherConfig, SagaEventPublisher
from sagamesh.retry import ExponentialBackoffRetryPolicy
from sagamesh.serialization import from_message
from sagamesh.testing.conformance import Collector

SAGAS = 250
STEPS = 20  # 250 x 20 = 5,000 events
BATCH = 500


@contextlib.asynccontextmanager
async def _memory() -> AsyncIterator[Broker]:
    async with MemoryBroker() as broker:
        yield broker


@contextlib.asynccontextmanager
async def _nats(url: str) -> AsyncIterator[Broker]:
    import nats
    from sagamesh_nats import NatsBroker

    prefix = f"SME{uuid.uuid4().hex[:8]}_"
    try:
        async with NatsBroker(url, stream_prefix=prefix, reconnect_time_wait=0.1) as broker:
            yield broker
    finally:
        nc = await nats.connect(url)
        try:
            jsm = nc.jsm()
            for info in await jsm.streams_info():
                if info.config.name and info.config.name.startswith((prefix, f"KV_{prefix}")):
                    await jsm.delete_stream(info.config.name)
        finally:
            await nc.close()


@contextlib.asynccontextmanager
async def _rabbitmq(url: str, unique: str) -> AsyncIterator[Broker]:
    import aio_pika
    from sagamesh_rabbitmq import RabbitBroker

    rabbit = RabbitBroker(url, exchange=f"e2e-{unique}")
    try:
        async with rabbit:
            yield rabbit
    finally:
        connection = await aio_pika.connect(url)
        try:
            channel = await connection.channel()
            for name in rabbit.declared_queues():
                with contextlib.suppress(Exception):
                    await channel.queue_delete(name)
            with contextlib.suppress(Exception):
                await channel.exchange_delete(rabbit.exchange)
        finally:
            await connection.close()


@contextlib.asynccontextmanager
async def _kafka(bootstrap: str) -> AsyncIterator[Broker]:
    from sagamesh_kafka import KafkaBroker

    async with KafkaBroker(f"kafka://{bootstrap}", session_timeout=6.0,
                           heartbeat_interval=0.2, rebalance_timeout=3.0) as broker:
        yield broker


@pytest_asyncio.fixture(params=[
    "memory",
    pytest.param("nats", marks=pytest.mark.nats),
    pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
    pytest.param("kafka", marks=pytest.mark.kafka),
])
async def broker(request: pytest.FixtureRequest, unique: str) -> AsyncIterator[Broker]:
    kind: str = request.param
    factories: dict[str, Any] = {
        "memory": lambda: _memory(),
        "nats": lambda: _nats(request.getfixturevalue("nats_url")),
        "rabbitmq": lambda: _rabbitmq(request.getfixturevalue("amqp_url"), unique),
        "kafka": lambda: _kafka(request.getfixturevalue("kafka_bootstrap")),
    }
    async with factories[kind]() as connected:
        yield connected


def _events(unique: str) -> list[SagaEvent]:
    """Step n of every saga is published before step n+1 (sagas interleaved)."""
    return [
        SagaEvent(saga_id=f"saga-{unique}-{s}", step_id=f"step-{n}",
                  type=EventType.SAGA_STEP_COMPLETED, metadata={"seq": str(n)})
        for n in range(STEPS) for s in range(SAGAS)
    ]


async def test_5000_saga_events_in_saga_order_with_retries_and_dlq(
    broker: Broker, unique: str
) -> None:
    topic, dlq_topic = f"saga.events.e2e-{unique}", f"saga.dlq.e2e-{unique}"
    events = _events(unique)
    flaky = {e.id for i, e in enumerate(events) if i % 97 == 0}  # fail once, then succeed
    poison = {e.id for i, e in enumerate(events) if i % 1000 == 500}  # always fail -> DLQ
    handled: dict[str, list[int]] = defaultdict(list)
    attempts: dict[str, list[int]] = defaultdict(list)
    expected = len(events) - len(poison)
    done = asyncio.Event()

    router = EventRouter()

    @router.handler(EventType.SAGA_STEP_COMPLETED, handler_id="steps")
    async def on_step(event: SagaEvent, ctx: HandlerContext) -> None:
        attempts[event.id].append(ctx.attempt)
        if event.id in poison or (event.id in flaky and ctx.attempt == 1):
            raise RuntimeError("handler failed (e2e: expected)")
        handled[event.saga_id].append(int(event.metadata["seq"]))
        if sum(len(v) for v in handled.values()) == expected:
            done.set()

    dead = Collector()
    await broker.subscribe(dlq_topic, dead.handler(), group=f"dlq-reader-{unique}")
    config = ConsumerConfig(
        topic_prefix=topic, group=f"orders-{unique}", ordering="per_saga", max_in_flight=256,
        retry=ExponentialBackoffRetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.2),
        dlq_topic=dlq_topic)
    publisher = SagaEventPublisher(broker, PublisherConfig(topic_prefix=topic))
    try:
        async with EventConsumer(broker, router, config) as consumer:
            for start in range(0, len(events), BATCH):
                result = await publisher.publish_batch(events[start:start + BATCH])
                assert result.published_count == BATCH and result.failed_count == 0
                assert result.error is None
            await asyncio.wait_for(done.wait(), 180)
            await dead.wait_until(lambda: len(dead.acked_ids()) >= len(poison), "DLQ copies",
                                  60)
            metrics = consumer.get_metrics()
    finally:
        await publisher.close()

    assert sum(len(v) for v in handled.values()) == expected
    poison_steps: dict[str, set[int]] = defaultdict(set)
    for e in events:
        if e.id in poison:
            poison_steps[e.saga_id].add(int(e.metadata["seq"]))
    assert len(handled) == SAGAS
    for saga_id, seqs in handled.items():  # per-saga order, every step exactly once
        want = [n for n in range(STEPS) if n not in poison_steps[saga_id]]
        assert seqs == want, f"{saga_id}: {seqs}"
    for event_id in flaky - poison:
        assert attempts[event_id] == [1, 2], attempts[event_id]
    assert dead.acked_ids() == poison
    assert len(dead.acked) == len(poison)
    by_id = {e.id: e for e in events}
    for record in dead.acked:
        message = record.message
        assert attempts[message.id] == [1, 2, 3]
        assert message.headers[Headers.ORIGINAL_TOPIC] == topic
        assert message.headers[Headers.ATTEMPTS] == "3"
        assert "RuntimeError" in message.headers[Headers.DLQ_REASON]
        assert message.headers[Headers.FIRST_FAILURE]
        assert from_message(message) == by_id[message.id]  # the original event, intact
    assert metrics.dead_lettered == len(poison)
    assert metrics.retried == len(flaky - poison) + 2 * len(poison)
    assert metrics.acked == expected
