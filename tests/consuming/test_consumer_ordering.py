"""Per-saga order under concurrency, real parallelism across sagas, and priority under load."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from sagamesh.brokers.memory import MemoryBroker
from sagamesh.consuming import (
    ConsumerConfig,
    EventConsumer,
    EventRouter,
    HandlerContext,
    RoutingStrategy,
)
from sagamesh.events import EventType, SagaEvent

from .consuming_helpers import Signal, event, publish, turns_until

STEPS = [EventType.SAGA_STARTED, EventType.SAGA_STEP_STARTED, EventType.SAGA_STEP_COMPLETED,
         EventType.STATE_CHANGED, EventType.SAGA_COMPLETED]


async def test_1000_sagas_x_5_events_keep_per_saga_order_with_16_workers(
        broker: MemoryBroker) -> None:
    router = EventRouter()
    seen: dict[str, list[int]] = defaultdict(list)
    active_sagas: set[str] = set()
    active = 0
    max_active = 0
    overlaps = 0
    done = Signal()

    @router.handler(handler_id="order-check")
    async def check(ev: SagaEvent, ctx: HandlerContext) -> None:
        nonlocal active, max_active, overlaps
        if ev.saga_id in active_sagas:
            overlaps += 1
        active_sagas.add(ev.saga_id)
        active += 1
        max_active = max(max_active, active)
        await asyncio.sleep(0)  # give other workers the chance to overlap
        await asyncio.sleep(0)
        seen[ev.saga_id].append(ev.metadata["seq"])
        active -= 1
        active_sagas.discard(ev.saga_id)
        done.hit()

    config = ConsumerConfig(group="order", workers=16, max_in_flight=256, ordering="per_saga")
    async with EventConsumer(broker, router, config) as consumer:
        # Interleave sagas: event k of every saga before event k+1 of any saga.
        for seq, type_ in enumerate(STEPS):
            await publish(broker, *(event(f"saga-{i:04d}", type_, metadata={"seq": seq})
                                    for i in range(1000)))
        await done.wait(5000, within=60)
        metrics = consumer.get_metrics()

    assert len(seen) == 1000
    bad = {saga: seqs for saga, seqs in seen.items() if seqs != [0, 1, 2, 3, 4]}
    assert bad == {}
    assert overlaps == 0, "two events of one saga ran at the same time"
    assert max_active >= 8, "little or no parallelism across sagas"
    assert max_active <= 16
    assert metrics.acked == 5000 and metrics.max_concurrent == max_active
    print(f"\nper-saga order: 5000 events, max concurrent handlers {max_active}/16")


async def test_ordering_none_also_delivers_everything_concurrently(broker: MemoryBroker) -> None:
    router = EventRouter()
    done = Signal()
    active = 0
    max_active = 0

    @router.handler(handler_id="any")
    async def any_(ev: SagaEvent, ctx: HandlerContext) -> None:
        nonlocal active, max_active
        active += 1
        max_active = max(max_active, active)
        await asyncio.sleep(0)
        active -= 1
        done.hit()

    config = ConsumerConfig(group="unordered", workers=8, ordering="none")
    async with EventConsumer(broker, router, config):
        await publish(broker, *(event("one-saga", EventType.STATE_CHANGED) for _ in range(200)))
        await done.wait(200)
    assert max_active > 1  # one saga, yet concurrent: ordering is off


async def test_priority_order_under_load_with_4_workers(broker: MemoryBroker) -> None:
    router = EventRouter(RoutingStrategy.BY_PRIORITY)
    gate = asyncio.Event()
    gated = Signal()
    started: list[str] = []
    done = Signal()

    @router.handler(EventType.STATE_CHANGED, priority=100, handler_id="gate")
    async def hold(ev: SagaEvent, ctx: HandlerContext) -> None:
        gated.hit()
        await gate.wait()

    @router.handler(EventType.SAGA_FAILED, priority=10, handler_id="urgent")
    async def urgent(ev: SagaEvent, ctx: HandlerContext) -> None:
        started.append("urgent")
        await asyncio.sleep(0)
        done.hit()

    @router.handler(EventType.SAGA_STARTED, priority=1, handler_id="normal")
    async def normal(ev: SagaEvent, ctx: HandlerContext) -> None:
        started.append("normal")
        await asyncio.sleep(0)
        done.hit()

    config = ConsumerConfig(group="prio", workers=4, max_in_flight=2048)
    async with EventConsumer(broker, router, config) as consumer:
        await publish(broker, *(event(f"gate-{i}", EventType.STATE_CHANGED) for i in range(4)))
        await gated.wait(4)  # all four workers are busy
        load = []
        for i in range(500):  # low priority first, then interleaved, to make it hard
            load.append(event(f"n-{i}", EventType.SAGA_STARTED))
            if i >= 100:
                load.append(event(f"u-{i}", EventType.SAGA_FAILED))
        load.extend(event(f"u-{i}", EventType.SAGA_FAILED) for i in range(100))
        await publish(broker, *load)
        await turns_until(lambda: consumer.dispatcher.pending == 1000)
        gate.set()
        await done.wait(1000, within=30)

    assert started.count("urgent") == 500 and started.count("normal") == 500
    assert started[:500] == ["urgent"] * 500, "a low-priority event started before an urgent one"


async def test_the_buffer_is_bounded_by_max_in_flight(broker: MemoryBroker) -> None:
    router = EventRouter()
    gate = asyncio.Event()
    entered = Signal()
    done = Signal()

    @router.handler(handler_id="slow")
    async def slow(ev: SagaEvent, ctx: HandlerContext) -> None:
        entered.hit()
        await gate.wait()
        done.hit()

    config = ConsumerConfig(group="bounded", workers=2, max_in_flight=32)
    async with EventConsumer(broker, router, config) as consumer:
        await publish(broker, *(event(f"s-{i}") for i in range(500)))
        await entered.wait(2)
        await turns_until(lambda: consumer.dispatcher.pending == 30)
        for _ in range(100):  # give the broker every chance to push more
            await asyncio.sleep(0)
        assert consumer.dispatcher.pending == 30  # 32 in flight = 2 running + 30 waiting
        assert broker.queued("saga.events", "bounded") == 468  # the rest stays in the broker
        gate.set()
        await done.wait(500)
        assert consumer.get_metrics().max_buffered == 30
