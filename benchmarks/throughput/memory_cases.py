"""The embedded memory broker: sagamesh against the broker's own publish/publish_many (the
"raw" client here), which isolates what the publisher and consumer add per event."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator

from sagamesh.brokers.base import Delivery
from sagamesh.brokers.memory import MemoryBroker

from .core import Case, ConsumeClock, Payload, fresh_messages, timed
from .sagamesh_cases import consume_case, publish_cases, unordered_consume_case


@contextlib.asynccontextmanager
async def memory_suite(run_id: str, payload: Payload,
                       consume_timeout: float) -> AsyncIterator[list[Case]]:
    broker = MemoryBroker(retention=0)  # publish benchmarks keep nothing
    consume_broker = MemoryBroker(retention=1_000_000)  # a new group replays the topic
    await broker.connect()
    await consume_broker.connect()
    runs = itertools.count()

    async def raw_single(count: int) -> float:
        messages = fresh_messages(count, "bench.raw")

        async def go() -> None:
            for message in messages:
                await broker.publish(message)

        return await timed(count, go)

    async def raw_pipelined(count: int) -> float:
        messages = fresh_messages(count, "bench.raw")
        return await timed(count, lambda: broker.publish_many(messages))

    async def raw_consume(count: int) -> float:
        topic = f"bench.raw.c{next(runs)}"
        await consume_broker.publish_many(fresh_messages(count, topic))
        clock = ConsumeClock(count)

        async def handler(delivery: Delivery) -> None:
            await delivery.ack()
            clock.tick()

        sub = await consume_broker.subscribe(topic, handler, group="bench", max_in_flight=256)
        try:
            return await clock.wait(consume_timeout)
        finally:
            await sub.close()

    sm_single, sm_batch = publish_cases(broker, "bench.sm")
    cases = [  # the cases a ratio compares run next to each other
        Case("publish.raw.single", raw_single),
        sm_single,
        Case("publish.raw.pipelined", raw_pipelined),
        sm_batch,
        Case("consume.raw.ack", raw_consume),
        consume_case(consume_broker, f"bench.sm.c{run_id}", consume_timeout=consume_timeout),
        unordered_consume_case(consume_broker, f"bench.sm.u{run_id}",
                               consume_timeout=consume_timeout),
    ]
    try:
        yield cases
    finally:
        await broker.close()
        await consume_broker.close()
