"""Kafka (a private tansu): aiokafka with acks=all, FastStream's KafkaBroker, sagamesh_kafka.

Topics have 3 partitions (sagamesh_kafka's default); every record is keyed by the saga id.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

from sagamesh.serialization import get_serializer

from .core import Case, ConsumeClock, Payload, fresh_messages, no_op_handler, timed
from .sagamesh_cases import consume_case, publish_cases, unordered_consume_case

PIPELINE_WINDOW = 2048  # unconfirmed sends in flight, as sagamesh_kafka's publish_window
PARTITIONS = 3


@contextlib.asynccontextmanager
async def kafka_suite(bootstrap: str, run_id: str, payload: Payload,
                      consume_timeout: float) -> AsyncIterator[list[Case]]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from faststream.kafka import KafkaBroker as FsKafkaBroker
    from sagamesh_kafka import KafkaBroker

    from sagamesh.brokers.kafka_wire import record_headers, record_key

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    fs = FsKafkaBroker(bootstrap, acks="all", logger=None)
    await fs.connect()
    broker = KafkaBroker(f"kafka://{bootstrap}", transactions="off")
    await broker.connect()
    body, key = payload.body, payload.key
    decode = get_serializer("json").decode
    runs = itertools.count()
    base = f"bench-{run_id}"

    async def topic(name: str) -> str:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1)])
        return name

    raw_topic = await topic(f"{base}-raw")
    fs_topic = await topic(f"{base}-fs")

    def headed(count: int) -> list[tuple[bytes, bytes | None, list[tuple[str, bytes]]]]:
        """Values, keys and headers as sagamesh_kafka sends them (the id header included)."""
        return [(m.body, record_key(m), record_headers(m))
                for m in fresh_messages(count, raw_topic)]

    async def raw_single(count: int) -> float:
        async def go() -> None:
            for _ in range(count):
                await producer.send_and_wait(raw_topic, body, key=key)

        return await timed(count, go)

    async def raw_single_headers(count: int) -> float:
        wire = headed(count)

        async def go() -> None:
            for b, k, h in wire:
                await producer.send_and_wait(raw_topic, b, key=k, headers=h)

        return await timed(count, go)

    async def pipelined(name: str, count: int) -> None:
        inflight: list[asyncio.Future[Any]] = []
        for _ in range(count):
            if len(inflight) >= PIPELINE_WINDOW:
                await inflight.pop(0)
            inflight.append(await producer.send(name, body, key=key))
        await asyncio.gather(*inflight)

    async def raw_pipelined(count: int) -> float:
        return await timed(count, lambda: pipelined(raw_topic, count))

    async def raw_pipelined_headers(count: int) -> float:
        wire = headed(count)

        async def go() -> None:
            inflight: list[asyncio.Future[Any]] = []
            for b, k, h in wire:
                if len(inflight) >= PIPELINE_WINDOW:
                    await inflight.pop(0)
                inflight.append(await producer.send(raw_topic, b, key=k, headers=h))
            await asyncio.gather(*inflight)

        return await timed(count, go)

    async def fs_single(count: int) -> float:
        async def go() -> None:
            for _ in range(count):
                await fs.publish(body, fs_topic, key=key)

        return await timed(count, go)

    async def raw_consume(count: int, typed: bool = False) -> float:
        """``typed``: each value is also decoded and handed to an awaited no-op handler."""
        name = await topic(f"{base}-rawc{next(runs)}")
        await pipelined(name, count)
        clock = ConsumeClock(count)
        consumer = AIOKafkaConsumer(name, bootstrap_servers=bootstrap, group_id=name,
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()

        async def loop() -> None:
            while not clock.done.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=256)
                for records in batches.values():
                    for record in records:
                        if typed:
                            await no_op_handler(decode(record.value))
                        clock.tick()
                if batches:
                    await consumer.commit()

        task = asyncio.create_task(loop())
        try:
            rate = await clock.wait(consume_timeout)
            # ends after its last commit: a commit cancelled midway leaves aiokafka a task
            # whose error nobody retrieves once the consumer stops
            await asyncio.wait_for(asyncio.shield(task), 10)
            return rate
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            await consumer.stop()

    async def raw_decode(count: int) -> float:
        return await raw_consume(count, typed=True)

    async def fs_consume(count: int) -> float:
        name = await topic(f"{base}-fsc{next(runs)}")
        await pipelined(name, count)
        clock = ConsumeClock(count)
        consumer_broker = FsKafkaBroker(bootstrap, logger=None)
        sub = consumer_broker.subscriber(name, group_id=name, auto_offset_reset="earliest")

        @sub
        async def handler(msg: Any) -> None:
            clock.tick()

        async with consumer_broker:
            await consumer_broker.start()
            return await clock.wait(consume_timeout)

    sm_single, sm_batch = publish_cases(broker, f"{base}-sm")
    cases = [  # the cases a ratio compares run next to each other
        Case("publish.raw.single", raw_single),
        Case("publish.raw.single_headers", raw_single_headers),
        sm_single,
        Case("publish.faststream.single", fs_single),
        Case("publish.raw.pipelined", raw_pipelined),
        sm_batch,
        Case("publish.raw.pipelined_headers", raw_pipelined_headers),
        Case("consume.raw.ack", raw_consume),
        Case("consume.raw.decode", raw_decode),
        consume_case(broker, f"{base}-smc", consume_timeout=consume_timeout),
        unordered_consume_case(broker, f"{base}-smu", consume_timeout=consume_timeout),
        Case("consume.faststream.ack", fs_consume),
    ]
    try:
        yield cases
    finally:
        await broker.close()
        await fs.stop()
        await producer.stop()
        await admin.close()  # the tansu broker (memory storage) goes away with the run
