"""RabbitMQ: aio-pika with publisher confirms, FastStream's RabbitBroker, sagamesh_rabbitmq.

Every publish is persistent and goes through a durable topic exchange to a durable queue (a
message no queue is bound to would be dropped, which is cheaper and not what we measure).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from sagamesh.serialization import get_serializer

from .core import Case, ConsumeClock, Payload, Runner, fresh_messages, no_op_handler, timed
from .sagamesh_cases import consume_case, publish_cases, unordered_consume_case

PIPELINE_WINDOW = 512  # unconfirmed publishes in flight, as sagamesh_rabbitmq's default
PREFETCH = 256  # as sagamesh's consumer max_in_flight default


@contextlib.asynccontextmanager
async def rabbit_suite(url: str, run_id: str, payload: Payload,
                       consume_timeout: float) -> AsyncIterator[list[Case]]:
    import aio_pika
    from faststream.rabbit import (
        ExchangeType,
        RabbitExchange,
        RabbitQueue,
    )
    from faststream.rabbit import (
        RabbitBroker as FsRabbitBroker,
    )
    from sagamesh_rabbitmq import RabbitBroker
    from sagamesh_rabbitmq._topology import group_arguments, group_queue

    exchange_name = f"bench-{run_id}"
    connection = await aio_pika.connect(url)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.declare_exchange(exchange_name, aio_pika.ExchangeType.TOPIC,
                                              durable=True)
    queues: list[str] = []

    async def bound_queue(name: str, routing_key: str,
                          arguments: dict[str, Any] | None = None) -> aio_pika.abc.AbstractQueue:
        queue = await channel.declare_queue(name, durable=True, arguments=arguments)
        await queue.bind(exchange, routing_key=routing_key)
        queues.append(name)
        return queue

    sinks = {key: await bound_queue(f"bench-{run_id}-{key}", f"bench.{key}")
             for key in ("raw", "fs", "sm")}
    fs_exchange = RabbitExchange(exchange_name, type=ExchangeType.TOPIC, durable=True)
    fs = FsRabbitBroker(url, logger=None)
    await fs.connect()
    broker = RabbitBroker(url, exchange=exchange_name)
    await broker.connect()
    body = payload.body
    decode = get_serializer("json").decode
    runs = itertools.count()

    def message() -> aio_pika.Message:
        return aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                content_type="application/json")

    def headed(count: int) -> list[aio_pika.Message]:
        """Messages with the headers and ``message_id`` sagamesh_rabbitmq sends."""
        return [aio_pika.Message(m.body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                 content_type=m.headers.get("content-type"), message_id=m.id,
                                 headers={**m.headers, "x-sagamesh-key": m.key})
                for m in fresh_messages(count, "bench.raw")]

    async def purge() -> None:
        for queue in sinks.values():
            await queue.purge()

    async def raw_single(count: int, wire: list[aio_pika.Message] | None = None) -> float:
        await purge()

        async def go() -> None:
            for index in range(count):
                await exchange.publish(wire[index] if wire else message(),
                                       routing_key="bench.raw")

        return await timed(count, go)

    async def raw_single_headers(count: int) -> float:
        return await raw_single(count, headed(count))

    async def pipelined(routing_key: str, count: int,
                        wire: list[aio_pika.Message] | None = None) -> None:
        window = asyncio.Semaphore(PIPELINE_WINDOW)

        async def one(index: int) -> None:
            try:
                await exchange.publish(wire[index] if wire else message(),
                                       routing_key=routing_key)
            finally:
                window.release()

        tasks = []
        for index in range(count):
            await window.acquire()
            tasks.append(asyncio.create_task(one(index)))
        await asyncio.gather(*tasks)

    async def raw_pipelined(count: int) -> float:
        await purge()
        return await timed(count, lambda: pipelined("bench.raw", count))

    async def raw_pipelined_headers(count: int) -> float:
        await purge()
        wire = headed(count)
        return await timed(count, lambda: pipelined("bench.raw", count, wire))

    async def fs_single(count: int) -> float:
        await purge()

        async def go() -> None:
            for _ in range(count):
                await fs.publish(body, exchange=fs_exchange, routing_key="bench.fs",
                                 persist=True)

        return await timed(count, go)

    async def raw_consume(count: int, typed: bool = False) -> float:
        """``typed``: each body is also decoded and handed to an awaited no-op handler."""
        name = f"bench-{run_id}-rawc{next(runs)}"
        queue = await bound_queue(name, name)
        await pipelined(name, count)
        consumer_channel = await connection.channel()
        await consumer_channel.set_qos(prefetch_count=PREFETCH)
        queue = await consumer_channel.get_queue(name)
        clock = ConsumeClock(count)

        async def on_message(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
            if typed:
                await no_op_handler(decode(msg.body))
            await msg.ack()
            clock.tick()

        tag = await queue.consume(on_message)
        try:
            return await clock.wait(consume_timeout)
        finally:
            await queue.cancel(tag)
            await consumer_channel.close()

    async def raw_decode(count: int) -> float:
        return await raw_consume(count, typed=True)

    async def fs_consume(count: int) -> float:
        name = f"bench-{run_id}-fsc{next(runs)}"
        await bound_queue(name, name)
        await pipelined(name, count)
        clock = ConsumeClock(count)
        consumer_broker = FsRabbitBroker(url, logger=None, default_channel=None)
        sub = consumer_broker.subscriber(RabbitQueue(name, durable=True, routing_key=name),
                                         fs_exchange)

        @sub
        async def handler(msg: Any) -> None:
            clock.tick()

        async with consumer_broker:
            await consumer_broker.start()
            return await clock.wait(consume_timeout)

    async def prepare_group(topic: str, group: str) -> None:
        # What sagamesh_rabbitmq.subscribe would declare for an ordered group.
        await bound_queue(group_queue(exchange_name, topic, group), topic,
                          group_arguments(ordered=True, queue_type="classic"))

    async def prepare_unordered_group(topic: str, group: str) -> None:
        await bound_queue(group_queue(exchange_name, topic, group), topic,
                          group_arguments(ordered=False, queue_type="classic"))

    sm_single, sm_batch = (Case(c.name, _after(purge, c.run))
                           for c in publish_cases(broker, "bench.sm"))
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
        consume_case(broker, f"bench.smc{run_id}", consume_timeout=consume_timeout,
                     prepare=prepare_group),
        unordered_consume_case(broker, f"bench.smu{run_id}", consume_timeout=consume_timeout,
                               prepare=prepare_unordered_group),
        Case("consume.faststream.ack", fs_consume),
    ]
    try:
        yield cases
    finally:
        await broker.close()
        await fs.stop()
        for name in queues:
            with contextlib.suppress(Exception):
                await channel.queue_delete(name)
        with contextlib.suppress(Exception):
            await channel.exchange_delete(exchange_name)
        await connection.close()


def _after(first: Callable[[], Awaitable[None]], run: Runner) -> Runner:
    """``run`` with ``first`` done before it, untimed."""

    async def wrapped(count: int) -> float:
        await first()
        return await run(count)

    return wrapped
