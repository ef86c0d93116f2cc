"""Consume throughput on the embedded memory broker (events/s) with 1 and 16 workers, and the
overhead per event of the priority dispatcher and of the message processor.

Run: .venv/bin/pytest benchmarks/test_consume.py --benchmark-enable -q -s
Each round puts EVENTS_PER_ROUND pre-encoded events on the broker and waits until the handler
saw all of them, so the figure is broker → decode → route → dispatch → handler → ack.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from sagamesh.brokers.memory import MemoryBroker
from sagamesh.consuming import (
    ConsumerConfig,
    EventConsumer,
    EventRouter,
    HandlerContext,
    MessageProcessor,
    PriorityDispatcher,
)
from sagamesh.events import EventType, SagaEvent
from sagamesh.message import Message
from sagamesh.retry import NoRetryPolicy
from sagamesh.serialization import get_serializer, to_message

EVENTS_PER_ROUND = 2_000
IO_EVENTS_PER_ROUND = 200
SAGAS = 200


def _messages(n: int) -> list[Message]:
    serializer = get_serializer("json")
    return [
        to_message(SagaEvent(saga_id=f"order-{i % SAGAS}", type=EventType.SAGA_STEP_COMPLETED,
                             step_id="reserve-inventory", correlation_id="corr-1",
                             source="orders", service="order-service",
                             data={"order_id": f"o-{i}", "amount": 129.5, "items": [1, 2, 3]},
                             metadata={"tenant": "acme"}),
                   "saga.events", serializer)
        for i in range(n)
    ]


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _report(benchmark: object, events: int, label: str) -> None:
    """Mean and best round: on a shared machine the best round is the steadier figure."""
    stats = benchmark.stats.stats  # type: ignore[attr-defined]
    info = benchmark.extra_info  # type: ignore[attr-defined]
    info["events_per_s"] = round(events / stats.mean)
    info["us_per_event"] = round(stats.mean * 1e6 / events, 3)
    info["best_events_per_s"] = round(events / stats.min)
    info["best_us_per_event"] = round(stats.min * 1e6 / events, 3)
    print(f"\n{label}: mean {events / stats.mean:,.0f} events/s "
          f"({stats.mean * 1e6 / events:.2f} µs/event), best round {events / stats.min:,.0f} "
          f"events/s ({stats.min * 1e6 / events:.2f} µs/event)")


@pytest.mark.parametrize("workers", [1, 16])
@pytest.mark.parametrize("work", ["noop", "io-1ms"])
def test_consume_throughput(benchmark: object, loop: asyncio.AbstractEventLoop,
                            workers: int, work: str) -> None:
    """``noop`` handlers never yield (pure consume overhead); ``io-1ms`` handlers await 1 ms
    like a database call would, which is where more workers pay off."""
    broker = MemoryBroker(retention=0)
    router = EventRouter()
    state = {"seen": 0, "target": 0}
    reached: list[asyncio.Future[None]] = []
    io = work == "io-1ms"
    per_round = IO_EVENTS_PER_ROUND if io else EVENTS_PER_ROUND

    @router.handler(EventType.SAGA_STEP_COMPLETED, handler_id="bench")
    async def handle(event: SagaEvent, ctx: HandlerContext) -> None:
        if io:
            await asyncio.sleep(0.001)
        state["seen"] += 1
        if state["seen"] == state["target"] and reached:
            reached.pop().set_result(None)

    consumer = EventConsumer(broker, router, ConsumerConfig(
        group="bench", workers=workers, max_in_flight=256, ordering="per_saga"))
    messages = _messages(per_round)

    async def setup() -> None:
        await broker.connect()
        await consumer.start()

    async def run() -> None:
        state["target"] += per_round
        fut = asyncio.get_running_loop().create_future()
        reached.append(fut)
        await broker.publish_many(messages)
        await fut

    loop.run_until_complete(setup())
    try:
        benchmark(lambda: loop.run_until_complete(run()))  # type: ignore[operator]
    finally:
        loop.run_until_complete(consumer.stop())
        loop.run_until_complete(broker.close())
    assert state["seen"] == state["target"]
    assert consumer.get_metrics().acked == state["target"]
    _report(benchmark, per_round, f"consume {work}, {workers} worker(s)")


def test_dispatcher_fast_path(benchmark: object, loop: asyncio.AbstractEventLoop) -> None:
    """acquire + release when a slot is free (the common case without a backlog)."""
    dispatcher = PriorityDispatcher(16, ordered=True)
    keys = [f"order-{i % SAGAS}" for i in range(EVENTS_PER_ROUND)]

    async def run() -> None:
        acquire, release = dispatcher.acquire, dispatcher.release
        for i, key in enumerate(keys):
            await acquire(key, i & 3)
            release(key)

    benchmark(lambda: loop.run_until_complete(run()))  # type: ignore[operator]
    assert dispatcher.pending == 0 and dispatcher.running == 0
    _report(benchmark, EVENTS_PER_ROUND, "dispatcher fast path acquire+release")


@pytest.mark.parametrize("dispatched", [False, True], ids=["tasks-only", "dispatched"])
def test_dispatcher_backlog(benchmark: object, loop: asyncio.AbstractEventLoop,
                            dispatched: bool) -> None:
    """EVENTS_PER_ROUND delivery tasks competing for 16 slots (queue, priority, lanes) versus
    the same tasks without a dispatcher: the difference is the queueing overhead per event."""
    dispatcher = PriorityDispatcher(16, ordered=True)
    keys = [f"order-{i % SAGAS}" for i in range(EVENTS_PER_ROUND)]

    async def delivery(key: str, priority: int) -> None:
        if dispatched:
            await dispatcher.acquire(key, priority)
        await asyncio.sleep(0)  # the handler yields once
        if dispatched:
            dispatcher.release(key)

    async def run() -> None:
        await asyncio.gather(*(delivery(k, i & 3) for i, k in enumerate(keys)))

    benchmark(lambda: loop.run_until_complete(run()))  # type: ignore[operator]
    assert dispatcher.pending == 0 and dispatcher.running == 0
    _report(benchmark, EVENTS_PER_ROUND,
            "backlog, 16 slots, " + ("dispatched" if dispatched else "tasks only (baseline)"))


def test_processor_overhead(benchmark: object, loop: asyncio.AbstractEventLoop) -> None:
    """decode + route + run a no-op handler + decide, without broker or dispatcher."""
    router = EventRouter()

    @router.handler(EventType.SAGA_STEP_COMPLETED, handler_id="noop")
    async def noop(event: SagaEvent, ctx: HandlerContext) -> None:
        return None

    processor = MessageProcessor(router, retry=NoRetryPolicy())
    messages = _messages(EVENTS_PER_ROUND)

    async def run() -> None:
        process = processor.process
        for m in messages:
            await process(m)

    benchmark(lambda: loop.run_until_complete(run()))  # type: ignore[operator]
    _report(benchmark, EVENTS_PER_ROUND, "processor decode+route+handle")
