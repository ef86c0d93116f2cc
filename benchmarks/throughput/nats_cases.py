"""NATS JetStream: nats-py (PubAck per publish), FastStream's NatsBroker, sagamesh_nats."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

from sagamesh.serialization import get_serializer

from .core import Case, ConsumeClock, Payload, fresh_messages, no_op_handler, timed
from .sagamesh_cases import consume_case, publish_cases, unordered_consume_case

PIPELINE_WINDOW = 2048  # PubAcks in flight, as sagamesh_nats' max_pending_publishes default
FETCH_BATCH = 256  # messages per pull request (sagamesh's consumer pulls max_in_flight=256)


@contextlib.asynccontextmanager
async def nats_suite(url: str, run_id: str, payload: Payload,
                     consume_timeout: float) -> AsyncIterator[list[Case]]:
    import nats
    from faststream.nats import JStream, PullSub
    from faststream.nats import NatsBroker as FsNatsBroker
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig
    from sagamesh_nats import NatsBroker

    from sagamesh.brokers.nats_wire import encode_headers

    prefix = f"BENCH_{run_id}_"
    subject = f"bench.{run_id}"
    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=PIPELINE_WINDOW)
    jsm = nc.jsm()
    raw_stream = f"{prefix}raw"
    await jsm.add_stream(StreamConfig(name=raw_stream, subjects=[f"{subject}.raw.>"]))
    fs_stream = f"{prefix}fs"
    await jsm.add_stream(StreamConfig(name=fs_stream, subjects=[f"{subject}.fs.>"]))
    fs = FsNatsBroker(url, logger=None)
    await fs.connect()
    broker = NatsBroker(url, stream_prefix=prefix)
    await broker.connect()
    body = payload.body
    decode = get_serializer("json").decode
    runs = itertools.count()

    def headed(topic: str, count: int) -> list[tuple[bytes, dict[str, str]]]:
        """Bodies and headers as sagamesh_nats sends them (``Nats-Msg-Id`` included)."""
        return [(m.body, encode_headers(m)) for m in fresh_messages(count, topic)]

    async def raw_single(count: int) -> float:
        topic = f"{subject}.raw.single"

        async def go() -> None:
            for _ in range(count):
                await js.publish(topic, body)

        return await timed(count, go)

    async def raw_single_headers(count: int) -> float:
        topic = f"{subject}.raw.singleh"
        wire = headed(topic, count)

        async def go() -> None:
            for b, h in wire:
                await js.publish(topic, b, headers=h)

        return await timed(count, go)

    async def raw_pipelined(count: int) -> float:
        topic = f"{subject}.raw.pipe"

        async def go() -> None:
            futures = [await js.publish_async(topic, body) for _ in range(count)]
            await asyncio.gather(*futures)

        return await timed(count, go)

    async def raw_pipelined_headers(count: int) -> float:
        topic = f"{subject}.raw.pipeh"
        wire = headed(topic, count)

        async def go() -> None:
            futures = [await js.publish_async(topic, b, headers=h) for b, h in wire]
            await asyncio.gather(*futures)

        return await timed(count, go)

    async def fs_single(count: int) -> float:
        topic = f"{subject}.fs.single"

        async def go() -> None:
            for _ in range(count):
                await fs.publish(body, topic, stream=fs_stream)

        return await timed(count, go)

    async def fill(topic: str, count: int) -> None:
        await asyncio.gather(*[await js.publish_async(topic, body) for _ in range(count)])

    async def raw_consume(count: int, typed: bool = False) -> float:
        """``typed``: each body is also decoded and handed to an awaited no-op handler."""
        topic = f"{subject}.raw.c{next(runs)}"
        await fill(topic, count)
        name = topic.replace(".", "_")
        await jsm.add_consumer(raw_stream, ConsumerConfig(
            durable_name=name, ack_policy=AckPolicy.EXPLICIT, filter_subject=topic,
            deliver_policy=DeliverPolicy.ALL, max_ack_pending=4 * FETCH_BATCH))
        psub = await js.pull_subscribe_bind(name, raw_stream)
        clock = ConsumeClock(count)

        async def loop() -> None:
            while True:
                try:
                    msgs = await psub.fetch(FETCH_BATCH, timeout=1.0)
                except nats.errors.TimeoutError:
                    continue
                for msg in msgs:
                    if typed:
                        await no_op_handler(decode(msg.data))
                    await msg.ack()
                    clock.tick()

        task = asyncio.create_task(loop())
        try:
            return await clock.wait(consume_timeout)
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            await psub.unsubscribe()

    async def raw_decode(count: int) -> float:
        return await raw_consume(count, typed=True)

    async def fs_consume(count: int) -> float:
        topic = f"{subject}.fs.c{next(runs)}"
        await fill(topic, count)
        clock = ConsumeClock(count)
        consumer_broker = FsNatsBroker(url, logger=None)
        sub = consumer_broker.subscriber(
            topic, stream=JStream(fs_stream, declare=False),
            durable=topic.replace(".", "_"), pull_sub=PullSub(FETCH_BATCH, timeout=1.0))

        @sub
        async def handler(msg: Any) -> None:
            clock.tick()

        async with consumer_broker:
            await consumer_broker.start()
            return await clock.wait(consume_timeout)

    sm_single, sm_batch = publish_cases(broker, f"{subject}.sm.pub")
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
        consume_case(broker, f"{subject}.sm.c", consume_timeout=consume_timeout),
        unordered_consume_case(broker, f"{subject}.sm.u", consume_timeout=consume_timeout),
        Case("consume.faststream.ack", fs_consume),
    ]
    try:
        yield cases
    finally:
        await broker.close()
        await fs.stop()
        with contextlib.suppress(Exception):
            for info in await jsm.streams_info():
                # The run's streams, and the KV bucket of its ordered groups' leases.
                if info.config.name and (info.config.name.startswith(prefix)
                                         or info.config.name == f"KV_{prefix}leases"):
                    await jsm.delete_stream(info.config.name)
        await nc.close()
