"""The sagamesh cases, the same on every broker: publish_saga_event, publish_batch, and
EventConsumer consume+ack."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from typing import Literal

from sagamesh.brokers.base import Broker
from sagamesh.consuming import ConsumerConfig, EventConsumer, EventRouter, HandlerContext
from sagamesh.events import SagaEvent
from sagamesh.publishing import PublisherConfig, SagaEventPublisher
from sagamesh.retry import NoRetryPolicy

from .core import Case, ConsumeClock, fresh_events, fresh_messages, timed

# Called with a topic and a group before the topic is filled, so the group's messages are kept
# (RabbitMQ drops what no queue is bound to); None when the broker keeps them anyway.
PrepareGroup = Callable[[str, str], Awaitable[None]]


def publish_cases(broker: Broker, topic: str) -> list[Case]:
    """Publishes go to ``topic`` with the default PublisherConfig (confirmed, json)."""
    publisher = SagaEventPublisher(broker, PublisherConfig(topic_prefix=topic))

    async def single(count: int) -> float:
        events = fresh_events(count)
        publish = publisher.publish_saga_event

        async def body() -> None:
            for event in events:
                await publish(event)

        return await timed(count, body)

    async def batch(count: int) -> float:
        events = fresh_events(count)
        return await timed(count, lambda: publisher.publish_batch(events))

    return [Case("publish.sagamesh.single", single), Case("publish.sagamesh.batch", batch)]


def consume_case(broker: Broker, topic_base: str, *, consume_timeout: float,
                 prepare: PrepareGroup | None = None, workers: int = 16,
                 max_in_flight: int = 256, ordering: Literal["per_saga", "none"] = "per_saga",
                 name: str = "consume.sagamesh.consumer") -> Case:
    """Each run fills a fresh topic with ``count`` events (untimed), then an EventConsumer
    (default config: per-saga ordering, 16 workers) runs a no-op handler on all of them.

    The typical event has one saga id, so with per-saga ordering every event waits for the
    previous one to be settled; ``ordering="none"`` shows what that order costs."""
    runs = itertools.count()
    group = "bench"

    async def consume(count: int) -> float:
        topic = f"{topic_base}.{next(runs)}"
        if prepare is not None:
            await prepare(topic, group)
        results = await broker.publish_many(fresh_messages(count, topic))
        failed = [r for r in results if r is not None]
        if failed:
            raise failed[0]
        clock = ConsumeClock(count)
        router = EventRouter()

        @router.handler()
        async def on_event(event: SagaEvent, ctx: HandlerContext) -> None:
            clock.tick()

        consumer = EventConsumer(broker, router, ConsumerConfig(
            topics=[topic], group=group, retry=NoRetryPolicy(), workers=workers,
            max_in_flight=max_in_flight, ordering=ordering))
        async with consumer:
            rate = await clock.wait(consume_timeout)
        return rate

    return Case(name, consume)


def unordered_consume_case(broker: Broker, topic_base: str, *, consume_timeout: float,
                           prepare: PrepareGroup | None = None) -> Case:
    return consume_case(broker, topic_base, consume_timeout=consume_timeout, prepare=prepare,
                        ordering="none", name="consume.sagamesh.consumer_unordered")
