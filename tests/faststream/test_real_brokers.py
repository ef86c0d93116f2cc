"""The mount against the real brokers: events published by ``SagaEventPublisher`` over the
sagamesh adapter reach the mounted router in per-saga order, failures are retried with the
attempt counted, and what stays failed is dead-lettered where ``DeadLetterQueueHandler`` over
the adapter reads it (both directions of the wire format)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from sagamesh.brokers.registry import create_broker
from sagamesh.consuming import (
    ConsumerConfig,
    DeadLetterQueueHandler,
    DLQConfig,
    EventRouter,
    HandlerContext,
)
from sagamesh.errors import RetryableError
from sagamesh.events import EventType, SagaEvent
from sagamesh.faststream import mount
from sagamesh.publishing import PublisherConfig, SagaEventPublisher
from sagamesh.retry import FixedDelayRetryPolicy

if TYPE_CHECKING:
    from conftest import Family

SAGAS = 4
EVENTS = 5


async def _wait_for(condition: Any, limit: float = 60.0) -> None:
    async with asyncio.timeout(limit):
        while not condition():  # noqa: ASYNC110 - handlers record into plain containers
            await asyncio.sleep(0.02)


async def _scenario(family: Family, fs_url: str, sm_url: str, unique: str, *,
                    max_workers: int = 1) -> None:
    topic, dlq_topic = f"fs.{unique}.events", f"fs.{unique}.dlq"
    router = EventRouter()
    done: dict[str, list[tuple[int, int]]] = defaultdict(list)  # saga -> [(n, attempt)]
    tries: list[tuple[str, int, int]] = []

    @router.handler(EventType.SAGA_STEP_STARTED, handler_id="steps", processing_timeout=10)
    async def steps(event: SagaEvent, ctx: HandlerContext) -> None:
        n = int(event.data["n"])
        tries.append((event.saga_id, n, ctx.attempt))
        if event.saga_id == "poison":
            raise ConnectionError("downstream refuses this one")
        if n == 2 and ctx.attempt == 1:
            raise RetryableError("transient")
        await asyncio.sleep(0.001 * (SAGAS - int(event.saga_id[1:])))  # sagas interleave
        done[event.saga_id].append((n, ctx.attempt))

    fs_broker = family.make(fs_url)
    config = ConsumerConfig(topic_prefix=topic, group=f"fs-{unique}", dlq_topic=dlq_topic,
                            retry=FixedDelayRetryPolicy(3, 0.05), workers=8)
    mounted = mount(fs_broker, router, config, max_workers=max_workers)
    events = [SagaEvent(saga_id=f"s{s}", type=EventType.SAGA_STEP_STARTED, data={"n": n})
              for n in range(EVENTS) for s in range(SAGAS)]
    events.append(SagaEvent(saga_id="poison", type=EventType.SAGA_STEP_STARTED,
                            data={"n": 0}))
    async with create_broker(sm_url) as sm_broker:
        dlq = DeadLetterQueueHandler(sm_broker, DLQConfig(topic=dlq_topic,
                                                          group=f"dlq-{unique}"))
        async with dlq, SagaEventPublisher(sm_broker, PublisherConfig(
                topic_prefix=topic)) as publisher:
            if family.name == "kafka":  # topics exist before the FastStream group joins
                await publisher.publish_batch(events)
            async with fs_broker:
                await fs_broker.start()
                if family.name != "kafka":
                    await publisher.publish_batch(events)
                await _wait_for(lambda: sum(len(v) for v in done.values()) == SAGAS * EVENTS
                                and dlq.get_metrics().received == 1)
            [entry] = await dlq.list()

    for saga in (f"s{s}" for s in range(SAGAS)):
        # Per-saga order survives concurrency and the in-place retry of event n=2.
        assert [n for n, _ in done[saga]] == list(range(EVENTS)), done[saga]
        assert dict(done[saga])[2] == 2
    assert [a for s, _, a in tries if s == "poison"] == [1, 2, 3]
    assert entry.reason.startswith("retries_exhausted: ConnectionError")
    assert entry.original_topic == topic and entry.attempts == 3
    assert entry.handler_id == "steps"
    assert entry.id == events[-1].id
    metrics = mounted.get_metrics()
    assert metrics.dead_lettered == 1 and metrics.acked == SAGAS * EVENTS


async def test_nats(by_name: dict[str, Family], nats_url: str, unique: str) -> None:
    await _scenario(by_name["nats"], nats_url, nats_url, unique, max_workers=4)


async def test_rabbitmq_unordered_runs_concurrently(by_name: dict[str, Family], amqp_url: str,
                                                    unique: str) -> None:
    """ordering="none": FastStream's prefetch lets deliveries overlap (max_concurrent > 1)."""
    family = by_name["rabbitmq"]
    router = EventRouter()
    gate = asyncio.Event()
    running = 0
    peak = 0

    @router.handler(handler_id="slow", processing_timeout=10)
    async def slow(event: SagaEvent, ctx: HandlerContext) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if peak >= 4:
            gate.set()
        await asyncio.wait_for(gate.wait(), 5)
        running -= 1

    fs_broker = family.make(amqp_url)
    topic = f"fs.{unique}.events"
    mounted = mount(fs_broker, router, ConsumerConfig(topic_prefix=topic, group=f"u-{unique}",
                                                      ordering="none", workers=8),
                    max_workers=8)
    async with create_broker(amqp_url) as sm_broker, SagaEventPublisher(
            sm_broker, PublisherConfig(topic_prefix=topic)) as publisher, fs_broker:
        await fs_broker.start()
        await publisher.publish_batch([SagaEvent(saga_id=f"u{i}", type=EventType.SAGA_STARTED)
                                       for i in range(8)])
        await _wait_for(lambda: mounted.get_metrics().acked == 8)
    assert peak >= 4


async def test_rabbitmq(by_name: dict[str, Family], amqp_url: str, unique: str) -> None:
    await _scenario(by_name["rabbitmq"], amqp_url, amqp_url, unique)


async def test_kafka(by_name: dict[str, Family], kafka_bootstrap: str, unique: str) -> None:
    await _scenario(by_name["kafka"], kafka_bootstrap, f"kafka://{kafka_bootstrap}", unique)
