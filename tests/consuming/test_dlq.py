"""DeadLetterQueueHandler: list / get / recover / purge / TTL / auto-retry, and nothing lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sagamesh.brokers.base import Delivery
from sagamesh.brokers.memory import MemoryBroker
from sagamesh.consuming import (
    ConsumerConfig,
    DeadLetterQueueHandler,
    DLQConfig,
    EventConsumer,
    EventHandlerConfig,
    EventRouter,
    HandlerContext,
    SagaEventHandler,
)
from sagamesh.errors import DeadLetterNotFoundError, HandlerTimeoutError
from sagamesh.events import SagaEvent
from sagamesh.message import Headers, Message
from sagamesh.publishing import DLQRetryPolicy
from sagamesh.retry import NoRetryPolicy

from .consuming_helpers import DLQ, TOPIC, Signal, event, message, poll_until, publish, turns_until


class Switch:
    """A consumer whose single handler fails while ``failing`` is True."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.failing = True
        self.calls: list[tuple[str, int]] = []
        self.succeeded = Signal()
        self.router = EventRouter()

        @self.router.handler(handler_id="switch")
        async def handle(ev: SagaEvent, ctx: HandlerContext) -> None:
            self.calls.append((ev.id, ctx.attempt))
            if self.failing:
                raise RuntimeError("still broken")
            self.succeeded.hit()

        self.consumer = EventConsumer(broker, self.router, ConsumerConfig(
            group="app", retry=NoRetryPolicy(), dlq_topic=DLQ))


@pytest.fixture
async def app(broker: MemoryBroker) -> AsyncIterator[Switch]:
    switch = Switch(broker)
    async with switch.consumer:
        yield switch


def dlq_handler(broker: MemoryBroker, **kw: object) -> DeadLetterQueueHandler:
    policy = kw.pop("retry_policy", DLQRetryPolicy(max_retries=3, retry_interval=60, ttl=3600))
    return DeadLetterQueueHandler(broker, DLQConfig(topic=DLQ, retry_policy=policy,  # type: ignore[arg-type]
                                                    **kw))  # type: ignore[arg-type]


async def received(handler: DeadLetterQueueHandler, n: int) -> None:
    await turns_until(lambda: handler.metrics.received >= n)


async def test_list_get_and_unknown_ids(broker: MemoryBroker, app: Switch) -> None:
    async with dlq_handler(broker) as dlq:
        evs = [event(f"s{i}") for i in range(3)]
        await publish(broker, *evs)
        await received(dlq, 3)
        entries = await dlq.list()
        assert sorted(e.id for e in entries) == sorted(e.id for e in evs)
        entry = await dlq.get(evs[1].id)
        assert entry.original_topic == TOPIC
        assert entry.reason.startswith("retries_exhausted: RuntimeError: still broken")
        assert (entry.attempts, entry.recoveries, entry.handler_id) == (1, 0, "switch")
        assert entry.message.body == message(evs[1]).body
        with pytest.raises(DeadLetterNotFoundError):
            await dlq.get("nope")
        with pytest.raises(DeadLetterNotFoundError):
            await dlq.recover("nope")


async def test_recover_republishes_to_the_original_topic(broker: MemoryBroker, app: Switch) -> None:
    async with dlq_handler(broker) as dlq:
        ev = event("s-recover")
        await publish(broker, ev)
        await received(dlq, 1)
        app.failing = False
        result = await dlq.recover(ev.id)
        assert (result.recovered, result.target) == (True, TOPIC)
        await app.succeeded.wait(1)
        assert await dlq.list() == []
        assert dlq.get_metrics().recovered == 1
    assert app.calls == [(ev.id, 1), (ev.id, 1)]  # a fresh delivery on the original topic


async def test_a_recovered_message_that_fails_again_returns_with_counts_increased(
        broker: MemoryBroker, app: Switch) -> None:
    async with dlq_handler(broker) as dlq:
        ev = event("s-again")
        await publish(broker, ev)
        await received(dlq, 1)
        assert ((await dlq.get(ev.id)).attempts, (await dlq.get(ev.id)).recoveries) == (1, 0)
        for round_ in (1, 2, 3):
            await dlq.recover(ev.id)
            await received(dlq, 1 + round_)
            entry = await dlq.get(ev.id)
            assert (entry.attempts, entry.recoveries) == (1 + round_, round_)
            assert entry.reason.startswith("retries_exhausted")
            assert entry.first_failure == (await dlq.get(ev.id)).first_failure
        assert len(await dlq.list()) == 1  # never lost, never duplicated


async def test_recover_into_a_handler(broker: MemoryBroker, app: Switch) -> None:
    async with dlq_handler(broker) as dlq:
        ok_ev, bad_ev = event("s-ok"), event("s-bad")
        await publish(broker, ok_ev, bad_ev)
        await received(dlq, 2)
        got: list[tuple[str, int]] = []

        async def fixer(ev: SagaEvent, ctx: HandlerContext) -> None:
            got.append((ev.id, ctx.attempt))

        result = await dlq.recover(ok_ev.id, fixer)
        assert result.recovered and got == [(ok_ev.id, 2)]
        with pytest.raises(DeadLetterNotFoundError):
            await dlq.get(ok_ev.id)

        class Stubborn(SagaEventHandler):
            config = EventHandlerConfig(handler_id="stubborn", processing_timeout=0.05)

            async def handle_saga_event(self, event: SagaEvent, ctx: HandlerContext) -> None:
                await asyncio.Event().wait()

        result = await dlq.recover(bad_ev.id, Stubborn())
        assert not result.recovered and isinstance(result.error, HandlerTimeoutError)
        entry = await dlq.get(bad_ev.id)
        assert (entry.attempts, entry.recoveries, entry.handler_id) == (2, 1, "stubborn")
        assert entry.reason.startswith("recovery_failed: HandlerTimeoutError")
        m = dlq.get_metrics()
        assert (m.recovered, m.recovery_failures) == (1, 1)
    assert [c[0] for c in app.calls] == [ok_ev.id, bad_ev.id]  # nothing republished


async def test_purge_all_or_older_than(broker: MemoryBroker) -> None:
    now = [1000.0]
    dlq = DeadLetterQueueHandler(broker, DLQConfig(topic=DLQ), clock=lambda: now[0])
    for i in range(5):
        await dlq.add(Message(id=f"m{i}", topic=DLQ, body=b"{}"))
        now[0] += 10
    assert await dlq.purge(older_than=25) == 3  # m0, m1, m2 arrived more than 25 s ago
    assert [e.id for e in await dlq.list()] == ["m3", "m4"]
    assert await dlq.purge() == 2
    assert await dlq.list() == [] and dlq.get_metrics().purged == 5


async def test_entries_expire_after_the_ttl(broker: MemoryBroker) -> None:
    now = [0.0]
    policy = DLQRetryPolicy(max_retries=0, retry_interval=1, ttl=100)
    dlq = DeadLetterQueueHandler(broker, DLQConfig(topic=DLQ, retry_policy=policy,
                                                   scan_interval=0.005), clock=lambda: now[0])
    await dlq.add(Message(id="old", topic=DLQ))
    now[0] = 60
    await dlq.add(Message(id="new", topic=DLQ))
    now[0] = 100  # "old" reaches its TTL
    with pytest.raises(DeadLetterNotFoundError):
        await dlq.get("old")
    async with dlq:  # the background task expires without being asked
        await poll_until(lambda: dlq.metrics.expired == 1)
        assert [e.id for e in await dlq.list()] == ["new"]
        now[0] = 200
        assert await dlq.expire() == 1
        assert await dlq.list() == []


async def test_background_auto_retry_follows_the_policy_then_parks(
        broker: MemoryBroker, app: Switch) -> None:
    policy = DLQRetryPolicy(max_retries=2, retry_interval=0.02, ttl=3600)
    dlq = dlq_handler(broker, retry_policy=policy, auto_retry=True, scan_interval=0.005)
    async with dlq:
        ev = event("s-auto")
        await publish(broker, ev)
        await poll_until(lambda: dlq.metrics.received == 3)  # first failure + 2 retries
        await poll_until(lambda: len(app.calls) == 3)
        entry = await dlq.get(ev.id)
        assert (entry.recoveries, entry.attempts) == (2, 3)
        task = dlq._task
        assert dlq.get_metrics().auto_retries == 2
    assert task is not None and task.done()  # owned task cancelled on close
    assert [c[0] for c in app.calls] == [ev.id] * 3  # max_retries=2: parked afterwards


async def test_auto_retry_recovers_once_the_cause_is_fixed(
        broker: MemoryBroker, app: Switch) -> None:
    policy = DLQRetryPolicy(max_retries=5, retry_interval=0.02, ttl=3600)
    async with dlq_handler(broker, retry_policy=policy, auto_retry=True,
                           scan_interval=0.005) as dlq:
        ev = event("s-fixed")
        await publish(broker, ev)
        await received(dlq, 1)
        app.failing = False
        await app.succeeded.wait(1)
        await poll_until(lambda: dlq.metrics.recovered == 1)
        assert await dlq.list() == []


async def test_a_message_back_in_the_dlq_before_recovery_finished_is_kept(
        broker: MemoryBroker) -> None:
    dlq = DeadLetterQueueHandler(broker, DLQConfig(topic=DLQ))
    original = Message(id="m1", topic=DLQ, body=b"x",
                       headers={Headers.ORIGINAL_TOPIC: "orders", Headers.ATTEMPTS: "1"})
    await dlq.add(original)
    real_publish = broker.publish

    async def fast_failure(msg: Message) -> None:
        await real_publish(msg)
        # The consumer failed it again and it re-entered the DLQ before recover() returned.
        await dlq.add(Message(id=msg.id, topic=DLQ, body=msg.body,
                              headers={**msg.headers, Headers.ATTEMPTS: "2"}))

    broker.publish = fast_failure  # type: ignore[method-assign]
    result = await dlq.recover("m1")
    assert result.recovered
    entry = await dlq.get("m1")  # still there: the stale delete did not remove the newcomer
    assert (entry.attempts, entry.recoveries) == (2, 1)


async def test_a_failed_republish_keeps_the_entry(broker: MemoryBroker) -> None:
    dlq = DeadLetterQueueHandler(broker, DLQConfig(topic=DLQ))
    await dlq.add(Message(id="m1", topic=DLQ, headers={Headers.ORIGINAL_TOPIC: "orders"}))

    async def down(msg: Message) -> None:
        raise ConnectionError("broker down")

    broker.publish = down  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await dlq.recover("m1")
    assert (await dlq.get("m1")).recoveries == 0


async def test_a_handler_from_the_publishers_reliability_serves_its_dead_letters(
        broker: MemoryBroker) -> None:
    """``DLQConfig.from_reliability``: the topic the publisher dead-letters to and its
    ``dlq_retry_policy`` (here: auto-retried after 20 ms, back to the original topic)."""
    from sagamesh.publishing import PublisherConfig, ReliabilityConfig, SagaEventPublisher
    from sagamesh.testing.faults import FaultyBroker

    reliability = ReliabilityConfig(
        max_retry_attempts=0, dlq_topic="orders.dlq",
        dlq_retry_policy=DLQRetryPolicy(max_retries=1, retry_interval=0.02, ttl=3600))
    config = DLQConfig.from_reliability(reliability, auto_retry=True, scan_interval=0.005)
    assert (config.topic, config.retry_policy, config.auto_retry) == (
        "orders.dlq", reliability.dlq_retry_policy, True)
    poison = event("s-from-reliability")
    arrived: list[str] = []

    async def on_original(delivery: Delivery) -> None:
        arrived.append(delivery.message.id)
        await delivery.ack()

    await broker.subscribe(TOPIC, on_original, group="check")
    async with FaultyBroker(broker, fail_when=lambda m: m.topic == TOPIC) as faulty, \
            DeadLetterQueueHandler(broker, config) as dlq:
        publisher = SagaEventPublisher(faulty, PublisherConfig(topic_prefix=TOPIC,
                                                               reliability=reliability))
        await publisher.publish_saga_event(poison)  # fails once, parked in orders.dlq
        assert publisher.get_reliability_metrics().dlq_messages_count == 1
        await poll_until(lambda: arrived == [poison.id])  # re-published by the handler
        assert dlq.get_metrics().auto_retries == 1
        await publisher.close()
