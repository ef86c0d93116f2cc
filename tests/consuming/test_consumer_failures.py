"""Failures: timeouts, retries with the policy's delays, DLQ for poison / wrong schema /
always-raising handlers (while other messages keep flowing), failure actions, raising filters."""

from __future__ import annotations

import asyncio
import itertools
import time

import msgspec

from sagamesh.brokers.memory import MemoryBroker
from sagamesh.consuming import (
    ConsumerConfig,
    EventConsumer,
    EventRouter,
    FailureAction,
    HandlerContext,
    PredicateFilter,
)
from sagamesh.events import EventType, SagaEvent
from sagamesh.message import Headers, Message
from sagamesh.retry import ExponentialBackoffRetryPolicy, FixedDelayRetryPolicy, NoRetryPolicy

from .consuming_helpers import DLQ, TOPIC, Collector, Signal, event, message, publish


async def test_slow_handler_is_cancelled_at_its_timeout_and_counts_as_failed(
        broker: MemoryBroker, dlq: Collector) -> None:
    router = EventRouter()
    cancelled = Signal()
    began: list[float] = []
    ended: list[float] = []

    @router.handler(handler_id="slow", processing_timeout=0.1)
    async def slow(ev: SagaEvent, ctx: HandlerContext) -> None:
        began.append(time.perf_counter())
        try:
            await asyncio.Event().wait()  # would block forever
        except asyncio.CancelledError:
            ended.append(time.perf_counter())
            cancelled.hit()
            raise

    config = ConsumerConfig(group="t", retry=NoRetryPolicy(), dlq_topic=DLQ)
    async with EventConsumer(broker, router, config) as consumer:
        ev = event("s-slow")
        await publish(broker, ev)
        await cancelled.wait(1)
        [dead] = await dlq.wait(1)

    elapsed = ended[0] - began[0]
    assert 0.1 <= elapsed < 5.0, elapsed  # cancelled at the timeout, not left running
    metrics = router.get_metrics()["slow"]
    assert (metrics.total_processed, metrics.failed_count, metrics.timeout_count) == (1, 1, 1)
    assert metrics.max_processing_time >= 0.1
    assert dead.id == ev.id
    assert "HandlerTimeoutError" in dead.headers[Headers.DLQ_REASON]
    assert dead.headers[Headers.DLQ_HANDLER] == "slow"
    assert consumer.get_metrics().dead_lettered == 1


async def test_retries_are_counted_and_delayed_as_configured(
        broker: MemoryBroker, dlq: Collector) -> None:
    router = EventRouter()
    attempts: list[tuple[int, float]] = []

    @router.handler(handler_id="always-fails")
    async def fails(ev: SagaEvent, ctx: HandlerContext) -> None:
        attempts.append((ctx.attempt, time.perf_counter()))
        raise RuntimeError(f"boom #{ctx.attempt}")

    policy = ExponentialBackoffRetryPolicy(max_attempts=4, base_delay=0.05, max_delay=1.0,
                                           jitter=0.0)
    config = ConsumerConfig(group="t", retry=policy, dlq_topic=DLQ)
    async with EventConsumer(broker, router, config) as consumer:
        ev = event("s-retry")
        await publish(broker, ev)
        [dead] = await dlq.wait(1)

    assert [a for a, _ in attempts] == [1, 2, 3, 4]
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(attempts)]
    expected = [0.05, 0.1, 0.2]  # base * 2**(attempt-1)
    for gap, want in zip(gaps, expected, strict=True):
        assert gap >= want * 0.95, (gaps, expected)
    assert dead.headers[Headers.ATTEMPTS] == "4"
    assert dead.headers[Headers.DLQ_REASON].startswith("retries_exhausted: RuntimeError: boom #4")
    assert dead.headers[Headers.ORIGINAL_TOPIC] == TOPIC
    assert dead.headers[Headers.DLQ_ERROR] == "RuntimeError"
    m = consumer.get_metrics()
    assert (m.received, m.retried, m.dead_lettered, m.handler_failures) == (4, 3, 1, 4)
    assert router.get_metrics()["always-fails"].failed_count == 4


async def test_a_handler_that_recovers_on_the_third_attempt_is_acked(
        broker: MemoryBroker, dlq: Collector) -> None:
    router = EventRouter()
    seen: list[int] = []
    ok = Signal()

    @router.handler(handler_id="flaky")
    async def flaky(ev: SagaEvent, ctx: HandlerContext) -> None:
        seen.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError("transient")
        ok.hit()

    config = ConsumerConfig(group="t", retry=FixedDelayRetryPolicy(5, 0.01), dlq_topic=DLQ)
    async with EventConsumer(broker, router, config) as consumer:
        await publish(broker, event("s-flaky"))
        await ok.wait(1)
    assert seen == [1, 2, 3]
    assert dlq.messages == []
    m = router.get_metrics()["flaky"]
    assert (m.total_processed, m.successful_count, m.failed_count) == (3, 1, 2)
    assert consumer.get_metrics().acked == 1


async def test_poison_wrong_schema_and_raising_handler_end_in_dlq_while_others_flow(
        broker: MemoryBroker, dlq: Collector) -> None:
    router = EventRouter()
    good = Signal()

    @router.handler(handler_id="main")
    async def main(ev: SagaEvent, ctx: HandlerContext) -> None:
        if ev.saga_id == "bad-saga":
            raise ValueError("cannot process this saga")
        good.hit()

    config = ConsumerConfig(group="t", retry=FixedDelayRetryPolicy(3, 0.01), dlq_topic=DLQ,
                            workers=4)
    json_headers = {Headers.CONTENT_TYPE: "application/json"}
    poison = Message(id="poison-1", topic=TOPIC, key="x", body=b"\xff\xfe\x00not json",
                     headers=json_headers)
    wrong = Message(id="wrong-1", topic=TOPIC, key="y",
                    body=msgspec.json.encode({"hello": "world", "n": 1}), headers=json_headers)
    unknown = Message(id="unknown-ct", topic=TOPIC, key="z", body=b"{}",
                      headers={Headers.CONTENT_TYPE: "application/x-nope"})
    async with EventConsumer(broker, router, config) as consumer:
        await publish(broker, *(event(f"g-{i}") for i in range(50)))
        await broker.publish(poison)
        await broker.publish(wrong)
        await broker.publish(unknown)
        bad = event("bad-saga")
        await publish(broker, bad)
        await publish(broker, *(event(f"h-{i}") for i in range(50)))
        dead = await dlq.wait(4)
        await good.wait(100)
        # The consumer keeps running after all that.
        await publish(broker, *(event(f"later-{i}") for i in range(10)))
        await good.wait(110)
        assert consumer.running

    reasons = {m.id: m.headers[Headers.DLQ_REASON] for m in dead}
    assert reasons["poison-1"].startswith("decode_error: SerializationError")
    assert reasons["wrong-1"].startswith("decode_error: SerializationError")
    assert reasons["unknown-ct"].startswith("decode_error: SerializationError")
    assert reasons[bad.id].startswith("retries_exhausted: ValueError: cannot process")
    by_id = {m.id: m for m in dead}
    assert by_id["poison-1"].body == poison.body  # the original bytes are kept
    assert by_id["poison-1"].headers[Headers.ATTEMPTS] == "1"
    assert by_id[bad.id].headers[Headers.ATTEMPTS] == "3"
    m = consumer.get_metrics()
    assert (m.decode_errors, m.dead_lettered) == (3, 4)
    assert good.count == 110


async def test_failure_actions_dead_letter_discard_and_requeue(
        broker: MemoryBroker, dlq: Collector) -> None:
    router = EventRouter()
    calls: dict[str, list[int]] = {"dl": [], "discard": [], "requeue": []}
    requeued_ok = Signal()
    discarded = Signal()

    @router.handler(EventType.SAGA_FAILED, handler_id="dl",
                    on_failure=FailureAction.DEAD_LETTER)
    async def dl(ev: SagaEvent, ctx: HandlerContext) -> None:
        calls["dl"].append(ctx.attempt)
        raise RuntimeError("hopeless")

    def on_discard(ev: SagaEvent, error: BaseException) -> FailureAction:
        discarded.hit()
        return FailureAction.DISCARD

    @router.handler(EventType.SAGA_CANCELLED, handler_id="discard", on_failure=on_discard)
    async def discard(ev: SagaEvent, ctx: HandlerContext) -> None:
        calls["discard"].append(ctx.attempt)
        raise RuntimeError("don't care")

    async def on_requeue(ev: SagaEvent, error: BaseException) -> FailureAction:
        return FailureAction.REQUEUE

    @router.handler(EventType.SAGA_TIMED_OUT, handler_id="requeue", on_failure=on_requeue)
    async def requeue(ev: SagaEvent, ctx: HandlerContext) -> None:
        calls["requeue"].append(ctx.attempt)
        if ctx.attempt == 1:
            raise RuntimeError("once")
        requeued_ok.hit()

    # A long policy delay proves REQUEUE skips it (the test would time out otherwise).
    policy = FixedDelayRetryPolicy(max_attempts=3, delay=60.0)
    config = ConsumerConfig(group="t", retry=policy, dlq_topic=DLQ)
    async with EventConsumer(broker, router, config) as consumer:
        await publish(broker, event("a", EventType.SAGA_FAILED),
                      event("b", EventType.SAGA_CANCELLED), event("c", EventType.SAGA_TIMED_OUT))
        [dead] = await dlq.wait(1)
        await discarded.wait(1)
        await requeued_ok.wait(1)
        m = consumer.get_metrics()

    assert calls == {"dl": [1], "discard": [1], "requeue": [1, 2]}
    assert dead.headers[Headers.DLQ_REASON].startswith("handler_dead_letter: RuntimeError")
    assert dead.headers[Headers.DLQ_HANDLER] == "dl"
    assert (m.dead_lettered, m.discarded, m.retried, m.acked) == (1, 1, 1, 1)


async def test_a_raising_filter_is_a_handler_failure_not_a_crash(
        broker: MemoryBroker, dlq: Collector) -> None:
    router = EventRouter()
    ok = Signal()

    def picky(ev: SagaEvent) -> bool:
        if ev.saga_id == "explode":
            raise KeyError("tenant")
        return True

    @router.handler(handler_id="filtered", filters=[PredicateFilter(picky)])
    async def handle(ev: SagaEvent, ctx: HandlerContext) -> None:
        ok.hit()

    config = ConsumerConfig(group="t", retry=FixedDelayRetryPolicy(2, 0.01), dlq_topic=DLQ)
    async with EventConsumer(broker, router, config) as consumer:
        await publish(broker, event("explode"), event("fine-1"), event("fine-2"))
        [dead] = await dlq.wait(1)
        await ok.wait(2)
        assert consumer.running
    assert dead.headers[Headers.DLQ_REASON].startswith("retries_exhausted: KeyError")
    assert dead.headers[Headers.DLQ_HANDLER] == "filtered"
    assert router.get_metrics()["filtered"].failed_count == 2


async def test_dlq_publish_failure_nacks_instead_of_losing_the_message(
        broker: MemoryBroker) -> None:
    router = EventRouter()

    @router.handler(handler_id="h", on_failure=FailureAction.DEAD_LETTER)
    async def h(ev: SagaEvent, ctx: HandlerContext) -> None:
        raise RuntimeError("x")

    published: list[Message] = []
    broken = Signal()
    real_publish = broker.publish

    async def flaky_publish(message: Message) -> None:
        if message.topic == DLQ and not broken.count:
            broken.hit()
            raise ConnectionError("dlq down")
        published.append(message)
        await real_publish(message)

    broker.publish = flaky_publish  # type: ignore[method-assign]
    collector = Collector()
    await broker.subscribe(DLQ, collector, group="dlq-check")
    config = ConsumerConfig(group="t", retry=FixedDelayRetryPolicy(5, 0.01), dlq_topic=DLQ)
    async with EventConsumer(broker, router, config) as consumer:
        ev = event("s")
        ev_msg = message(ev)
        await real_publish(ev_msg)
        [dead] = await collector.wait(1)
        m = consumer.get_metrics()
    assert dead.id == ev_msg.id
    assert dead.headers[Headers.ATTEMPTS] == "2"  # the first DLQ publish failed: redelivered
    assert (m.dlq_publish_failures, m.dead_lettered) == (1, 1)


async def test_the_dead_letter_says_when_the_first_attempt_failed(
        broker: MemoryBroker, dlq: Collector) -> None:
    """``sagamesh-first-failure`` is the first failed attempt, not the dead-lettering (which
    comes two retry delays later)."""
    from datetime import UTC, datetime, timedelta

    router = EventRouter()
    calls: list[datetime] = []

    @router.handler(handler_id="broken")
    async def broken(ev: SagaEvent, ctx: HandlerContext) -> None:
        calls.append(datetime.now(UTC))
        raise ConnectionError("service down")

    config = ConsumerConfig(group="t", retry=FixedDelayRetryPolicy(3, 0.15), dlq_topic=DLQ)
    async with EventConsumer(broker, router, config):
        await publish(broker, event("s-first"))
        [dead] = await dlq.wait(1)
    assert len(calls) == 3 and calls[2] - calls[0] >= timedelta(seconds=0.3)
    first = datetime.fromisoformat(dead.headers[Headers.FIRST_FAILURE])
    assert calls[0] <= first < calls[1], (calls, first)
    assert dead.headers[Headers.ATTEMPTS] == "3"
