"""Consumer behaviour: context, per-handler concurrency, idempotency, topic strategy, metrics,
graceful drain."""

from __future__ import annotations

import asyncio

from sagamesh.brokers.memory import MemoryBroker
from sagamesh.consuming import (
    ConsumerConfig,
    EventConsumer,
    EventHandlerConfig,
    EventRouter,
    HandlerContext,
    MemoryIdempotencyStore,
    RoutingStrategy,
    SagaEventHandler,
)
from sagamesh.events import EventType, SagaEvent
from sagamesh.message import Headers
from sagamesh.retry import FixedDelayRetryPolicy

from .consuming_helpers import DLQ, TOPIC, Collector, Signal, event, message, publish


async def test_handler_context_describes_the_delivery(broker: MemoryBroker) -> None:
    router = EventRouter()
    contexts: list[HandlerContext] = []
    got = Signal()

    @router.handler(handler_id="ctx")
    async def h(ev: SagaEvent, ctx: HandlerContext) -> None:
        contexts.append(ctx)
        got.hit()

    async with EventConsumer(broker, router, ConsumerConfig(group="ctx-group")):
        ev = event("s-ctx")
        await publish(broker, ev)
        await got.wait(1)
    [ctx] = contexts
    assert (ctx.message_id, ctx.topic, ctx.attempt, ctx.broker, ctx.group) == (
        ev.id, TOPIC, 1, "memory", "ctx-group")
    assert ctx.partition == 0 and ctx.offset == 1
    assert ctx.headers[Headers.EVENT_ID] == ev.id
    assert ctx.headers[Headers.CONTENT_TYPE] == "application/json"


async def test_max_concurrency_bounds_one_handler_not_the_others(broker: MemoryBroker) -> None:
    router = EventRouter(RoutingStrategy.ALL)
    active = {"limited": 0, "free": 0}
    peak = {"limited": 0, "free": 0}
    done = Signal()

    def tracker(name: str) -> object:
        async def run(ev: SagaEvent, ctx: HandlerContext) -> None:
            active[name] += 1
            peak[name] = max(peak[name], active[name])
            await asyncio.sleep(0.005)
            active[name] -= 1
            done.hit()
        return run

    router.handler(EventType.SAGA_STARTED, handler_id="limited", max_concurrency=2)(
        tracker("limited"))  # type: ignore[arg-type]
    router.handler(EventType.SAGA_COMPLETED, handler_id="free")(
        tracker("free"))  # type: ignore[arg-type]
    async with EventConsumer(broker, router, ConsumerConfig(group="c", workers=8)):
        await publish(broker, *(event(f"l-{i}", EventType.SAGA_STARTED) for i in range(40)))
        await publish(broker, *(event(f"f-{i}", EventType.SAGA_COMPLETED) for i in range(40)))
        await done.wait(80)
    assert peak["limited"] == 2
    assert peak["free"] > 2


async def test_duplicates_are_skipped_and_marked_only_after_success(
        broker: MemoryBroker) -> None:
    router = EventRouter(RoutingStrategy.ALL)
    calls: dict[str, list[str]] = {"a": [], "b": []}
    settled = Signal()

    @router.handler(handler_id="a", priority=2)
    async def a(ev: SagaEvent, ctx: HandlerContext) -> None:
        calls["a"].append(ev.id)

    @router.handler(handler_id="b", priority=1)
    async def b(ev: SagaEvent, ctx: HandlerContext) -> None:
        calls["b"].append(ev.id)
        if ev.saga_id == "flaky" and ctx.attempt == 1:
            raise RuntimeError("first try fails")
        settled.hit()

    store = MemoryIdempotencyStore(ttl=60)
    config = ConsumerConfig(group="idem", idempotency=store,
                            retry=FixedDelayRetryPolicy(3, 0.01))
    async with EventConsumer(broker, router, config) as consumer:
        first = event("s-dup")
        await publish(broker, first, first, first)  # the same event id three times
        await settled.wait(1)
        flaky = event("flaky")
        await publish(broker, flaky)
        await settled.wait(2)
        await publish(broker, first)  # still a duplicate later on
        await publish(broker, event("s-other"))
        await settled.wait(3)
        m = consumer.get_metrics()

    assert calls["a"].count(first.id) == 1 and calls["b"].count(first.id) == 1
    # "b" failed once on flaky: it ran again, but "a" (already successful) was not re-run.
    assert calls["a"].count(flaky.id) == 1 and calls["b"].count(flaky.id) == 2
    assert m.duplicates == 3
    assert len(store) == 6  # (3 events) x (2 handlers)


async def test_memory_idempotency_store_expires_after_ttl() -> None:
    now = [0.0]
    store = MemoryIdempotencyStore(ttl=10, clock=lambda: now[0], max_keys=3)
    await store.add("k1")
    now[0] = 5.0
    await store.add("k2")
    assert await store.contains("k1") and await store.contains("k2")
    now[0] = 10.0
    assert not await store.contains("k1")  # exactly ttl later: gone
    assert await store.contains("k2")
    for k in ("k3", "k4", "k5"):
        await store.add(k)
    assert len(store) == 3 and not await store.contains("k2")  # bounded: oldest evicted


async def test_per_type_topic_strategy_subscribes_one_topic_per_handled_type(
        broker: MemoryBroker) -> None:
    router = EventRouter()
    got: list[str] = []
    done = Signal()

    @router.handler(EventType.SAGA_COMPLETED, EventType.SAGA_FAILED, handler_id="h")
    async def h(ev: SagaEvent, ctx: HandlerContext) -> None:
        got.append(ctx.topic)
        done.hit()

    config = ConsumerConfig(group="pt", topic_prefix="orders", topic_strategy="per_type")
    consumer = EventConsumer(broker, router, config)
    assert consumer.topics == ["orders.saga.completed", "orders.saga.failed"]
    async with consumer:
        await broker.publish(message(event("x", EventType.SAGA_FAILED), "orders.saga.failed"))
        await broker.publish(message(event("y", EventType.SAGA_COMPLETED),
                                     "orders.saga.completed"))
        await done.wait(2)
    assert sorted(got) == ["orders.saga.completed", "orders.saga.failed"]


async def test_class_handler_lifecycle_callbacks_and_metrics(broker: MemoryBroker) -> None:
    processed = Signal()

    class OrderHandler(SagaEventHandler):
        config = EventHandlerConfig(handler_id="order-handler", handler_name="orders",
                                    supported_event_types=[EventType.SAGA_STARTED], priority=5,
                                    max_concurrency=10, processing_timeout=30.0)

        def __init__(self) -> None:
            self.lifecycle: list[str] = []
            self.durations: list[float] = []

        async def start(self) -> None:
            self.lifecycle.append("start")

        async def stop(self) -> None:
            self.lifecycle.append("stop")

        async def handle_saga_event(self, event: SagaEvent, ctx: HandlerContext) -> None:
            await asyncio.sleep(0.002)

        async def on_event_processed(self, event: SagaEvent, duration: float) -> None:
            self.durations.append(duration)
            processed.hit()

    handler = OrderHandler()
    router = EventRouter()
    router.register(handler)
    async with EventConsumer(broker, router, ConsumerConfig(group="cls")):
        assert handler.lifecycle == ["start"]
        await publish(broker, *(event(f"s{i}") for i in range(10)))
        await publish(broker, event("ignored", EventType.SAGA_FAILED))  # unrouted: acked
        await processed.wait(10)
    assert handler.lifecycle == ["start", "stop"]
    m = handler.get_metrics()
    assert (m.total_processed, m.successful_count, m.failed_count) == (10, 10, 0)
    assert m.max_processing_time >= 0.002
    assert m.max_processing_time == max(handler.durations)
    assert abs(m.average_processing_time - sum(handler.durations) / 10) < 1e-9


async def test_graceful_drain_finishes_buffered_work_and_loses_nothing(
        broker: MemoryBroker) -> None:
    router = EventRouter()
    completed: list[str] = []
    first_batch = Signal()

    @router.handler(handler_id="work")
    async def work(ev: SagaEvent, ctx: HandlerContext) -> None:
        await asyncio.sleep(0.001)
        completed.append(ev.id)
        first_batch.hit()

    events = [event(f"s-{i % 50}", metadata={"i": i}) for i in range(300)]
    config = ConsumerConfig(group="drain", workers=4, max_in_flight=64, shutdown_timeout=30)
    consumer = EventConsumer(broker, router, config)
    await consumer.start()
    await publish(broker, *events)
    await first_batch.wait(20)
    await consumer.stop()  # drains what it holds
    first = list(completed)
    assert consumer.get_metrics().acked == len(first)
    assert consumer.get_metrics().in_flight == 0 and consumer.get_metrics().buffered == 0
    left = broker.queued(TOPIC, "drain")
    assert len(first) + left == 300  # nothing acked was lost, nothing vanished

    completed.clear()
    async with EventConsumer(broker, router, config):
        await first_batch.wait(300)
    assert len(set(first)) == len(first)
    assert set(first).isdisjoint(completed)  # acked work is not redelivered
    assert sorted(first + completed) == sorted(e.id for e in events)


async def test_drain_timeout_cancels_running_work_and_returns_it_unacked(
        broker: MemoryBroker) -> None:
    router = EventRouter()
    stuck = Signal()
    released = asyncio.Event()
    seen: list[tuple[str, int]] = []
    finished = Signal()

    @router.handler(handler_id="maybe-stuck", processing_timeout=None)
    async def h(ev: SagaEvent, ctx: HandlerContext) -> None:
        seen.append((ev.saga_id, ctx.attempt))
        if ev.saga_id.startswith("stuck") and not released.is_set():
            stuck.hit()
            await asyncio.Event().wait()
        finished.hit()

    config = ConsumerConfig(group="drain-t", workers=2, shutdown_timeout=0.2)
    consumer = EventConsumer(broker, router, config)
    await consumer.start()
    await publish(broker, event("stuck-1"), event("stuck-2"))
    await stuck.wait(2)  # both workers blocked
    await publish(broker, *(event(f"w-{i}") for i in range(5)))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await consumer.stop()
    assert loop.time() - t0 < 5.0  # bounded by shutdown_timeout, not by the stuck handlers
    assert finished.count == 0
    assert broker.queued(TOPIC, "drain-t") == 7  # everything went back, unacked

    released.set()
    async with EventConsumer(broker, router, config):
        await finished.wait(7)
    redelivered = dict(s for s in seen if s[0].startswith("stuck") and s[1] > 1)
    assert set(redelivered) == {"stuck-1", "stuck-2"}


async def test_consumer_restarts_and_start_stop_are_idempotent(
        broker: MemoryBroker, dlq: Collector) -> None:
    router = EventRouter()
    done = Signal()

    @router.handler(handler_id="h")
    async def h(ev: SagaEvent, ctx: HandlerContext) -> None:
        done.hit()

    consumer = EventConsumer(broker, router, ConsumerConfig(group="re", dlq_topic=DLQ))
    await consumer.start()
    await consumer.start()
    await publish(broker, event("a"))
    await done.wait(1)
    await consumer.stop()
    await consumer.stop()
    await consumer.start()
    await publish(broker, event("b"))
    await done.wait(2)
    await consumer.stop()
    assert consumer.get_metrics().acked == 2
    assert isinstance(dlq, Collector) and dlq.messages == []
