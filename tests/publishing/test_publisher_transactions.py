"""Transactions: all-or-nothing and ordered, natively (memory broker) and via the outbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from sagamesh.brokers.base import Broker
from sagamesh.brokers.memory import MemoryBroker
from sagamesh.errors import TransactionError
from sagamesh.publishing import (
    MemoryOutbox,
    PublisherConfig,
    PublisherTransaction,
    SagaEventPublisher,
)
from sagamesh.testing.faults import FaultyBroker

from .conftest import FakeTime, collect, make_event


@pytest.fixture(params=["native", "outbox"])
async def setup(request: pytest.FixtureRequest) -> AsyncIterator[tuple[MemoryBroker, Broker]]:
    """(the memory broker consumers read, the broker the publisher writes to)."""
    inner = MemoryBroker()
    async with inner:
        if request.param == "native":
            yield inner, inner
        else:
            yield inner, FaultyBroker(inner, native_transactions=False)


def uses_outbox(publisher: SagaEventPublisher) -> bool:
    return publisher.outbox_relay is not None


async def test_paths_are_chosen_by_capability(setup: tuple[MemoryBroker, Broker]) -> None:
    inner, broker = setup
    publisher = SagaEventPublisher(broker)
    assert not uses_outbox(publisher)  # chosen at the first commit
    async with publisher.transaction("tx-cap") as tx:
        await tx.publish_event(make_event())
    assert uses_outbox(publisher) == (broker is not inner)
    await publisher.close()


class LateTransactions(MemoryBroker):
    """A broker that knows it has transactions only once connected (as Kafka probes)."""

    def __init__(self) -> None:
        super().__init__()
        self.capabilities = replace(self.capabilities, native_transactions=False)
        self.transactions = 0

    async def connect(self) -> None:
        await super().connect()
        self.capabilities = replace(self.capabilities, native_transactions=True)

    def transaction(self) -> Any:
        self.transactions += 1
        return super().transaction()


async def test_a_publisher_built_before_connect_uses_the_native_transactions_found_then() -> None:
    broker = LateTransactions()
    publisher = SagaEventPublisher(broker)  # the broker does not know its capabilities yet
    async with broker:
        seen = await collect(broker, "saga.events")
        async with publisher.transaction("tx-late") as tx:
            await tx.publish_event(make_event())
        assert broker.transactions == 1 and not uses_outbox(publisher)
        await seen.wait_for(1)
        await publisher.close()


async def test_nothing_visible_before_commit_then_all_in_order(
        setup: tuple[MemoryBroker, Broker]) -> None:
    inner, broker = setup
    seen = await collect(inner, "saga.events")
    publisher = SagaEventPublisher(broker)
    events = [make_event(saga_id="order-1") for _ in range(6)]
    async with publisher.transaction("tx-001") as tx:
        for event in events:
            await tx.publish_event(event)
        assert len(tx) == 6
        assert inner.published == 0 and inner.queued("saga.events", "test") == 0
    assert tx.state == "committed"
    await seen.wait_for(6)
    assert seen.ids == [e.id for e in events]
    assert inner.published == 6
    assert publisher.get_metrics().published_count == 6
    await publisher.close()


async def test_exception_rolls_back_and_nothing_is_ever_visible(
        setup: tuple[MemoryBroker, Broker]) -> None:
    inner, broker = setup
    publisher = SagaEventPublisher(broker)
    with pytest.raises(RuntimeError, match="business failed"):
        async with publisher.transaction("tx-002") as tx:
            await tx.publish_event(make_event())
            await tx.publish_event(make_event())
            raise RuntimeError("business failed")
    assert tx.state == "rolled_back" and len(tx) == 0
    await publisher.close()  # drains the outbox: anything stored would be published now
    assert inner.published == 0
    relay = publisher.outbox_relay
    if relay is not None:
        assert isinstance(relay.outbox, MemoryOutbox) and relay.outbox.added == 0


async def test_with_transaction_and_explicit_rollback(setup: tuple[MemoryBroker, Broker]) -> None:
    inner, broker = setup
    seen = await collect(inner, "saga.events")
    publisher = SagaEventPublisher(broker)
    events = [make_event(saga_id="s") for _ in range(3)]

    async def publish_all(tx: PublisherTransaction) -> int:
        for event in events:
            await tx.publish_event(event)
        return len(tx)

    assert await publisher.with_transaction("tx-3", publish_all) == 3

    async def give_up(tx: PublisherTransaction) -> None:
        await tx.publish_event(make_event())
        await tx.rollback()

    await publisher.with_transaction("tx-4", give_up)

    async def failing(tx: PublisherTransaction) -> None:
        await tx.publish_event(make_event())
        raise KeyError("nope")

    with pytest.raises(KeyError):
        await publisher.with_transaction("tx-5", failing)
    single = make_event(saga_id="s")
    await publisher.publish_with_transaction(single)
    await publisher.close()
    await seen.wait_for(4)
    assert seen.ids == [e.id for e in events] + [single.id]
    assert inner.published == 4


async def test_concurrent_transactions_keep_their_order(
        setup: tuple[MemoryBroker, Broker]) -> None:
    import asyncio

    inner, broker = setup
    seen = await collect(inner, "saga.events")
    publisher = SagaEventPublisher(broker)

    async def run(n: int) -> list[str]:
        events = [make_event(saga_id=f"saga-{n}") for _ in range(5)]
        async with publisher.transaction(f"tx-{n}") as tx:
            for event in events:
                await tx.publish_event(event)
                await asyncio.sleep(0)
        return [e.id for e in events]

    expected = await asyncio.gather(*(run(n) for n in range(8)))
    await publisher.close()
    await seen.wait_for(40)
    log = [m.id for m in inner._topics["saga.events"].log]  # the broker's own order
    assert sorted(log) == sorted(seen.ids) and len(set(log)) == 40
    for ids in expected:
        positions = [log.index(i) for i in ids]
        assert positions == sorted(positions), "a transaction's events keep their order"
        if not uses_outbox(publisher):  # native commits append a transaction in one piece
            assert positions == list(range(positions[0], positions[0] + 5))
        assert [i for i in seen.ids if i in ids] == ids


async def test_transaction_misuse_raises_transaction_error(broker: MemoryBroker) -> None:
    publisher = SagaEventPublisher(broker)
    tx = publisher.transaction("tx-x")
    with pytest.raises(TransactionError):
        await tx.publish_event(make_event())  # not entered
    async with tx:
        with pytest.raises(TransactionError, match="already open"):
            async with publisher.transaction("tx-x"):
                pass
    with pytest.raises(TransactionError):
        await tx.publish_event(make_event())  # committed
    with pytest.raises(TransactionError):
        async with tx:
            pass
    assert broker.published == 0


async def test_native_commit_failure_publishes_nothing_and_raises(fake_time: FakeTime) -> None:
    inner = MemoryBroker()
    events = [make_event() for _ in range(5)]
    async with FaultyBroker(inner, fail_when=lambda m: m.id == events[3].id) as broker:
        publisher = SagaEventPublisher(broker, PublisherConfig(retry_attempts=2),
                                       sleep=fake_time.sleep, clock=fake_time.clock)
        assert not uses_outbox(publisher)
        with pytest.raises(TransactionError, match="nothing was published") as info:
            async with publisher.transaction("tx-fail") as tx:
                for event in events:
                    await tx.publish_event(event)
        assert tx.state == "failed"
        assert info.value.__cause__ is not None
        assert broker.attempts_by_id[events[3].id] == 3  # the whole commit re-tried twice
        assert broker.attempts_by_id[events[4].id] == 0  # never reached past the failure
        assert inner.published == 0
        metrics = publisher.get_metrics()
        assert (metrics.published_count, metrics.failed_count) == (0, 5)
        assert publisher.get_reliability_metrics().dlq_messages_count == 0


async def test_native_commit_recovers_from_transient_failure(fake_time: FakeTime) -> None:
    inner = MemoryBroker()
    async with FaultyBroker(inner, fail_first=1) as broker:
        seen = await collect(inner, "saga.events")
        publisher = SagaEventPublisher(broker, sleep=fake_time.sleep, clock=fake_time.clock)
        events = [make_event(saga_id="k") for _ in range(4)]
        async with publisher.transaction("tx-retry") as tx:
            for event in events:
                await tx.publish_event(event)
        await seen.wait_for(4)
        assert seen.ids == [e.id for e in events], "no duplicate, no gap, same order"
        assert broker.attempts == 5 and fake_time.sleeps == [1.0]


async def test_outbox_relay_retries_and_keeps_order_through_broker_failures() -> None:
    inner = MemoryBroker()
    async with FaultyBroker(inner, native_transactions=False, fail_every=3) as broker:
        seen = await collect(inner, "saga.events")
        publisher = SagaEventPublisher(broker)
        expected: dict[str, list[str]] = {}
        for saga in ("a", "b", "c"):
            events = [make_event(saga_id=saga) for _ in range(5)]
            expected[saga] = [e.id for e in events]
            async with publisher.transaction(f"tx-{saga}") as tx:
                for event in events:
                    await tx.publish_event(event)
        relay = publisher.outbox_relay
        assert relay is not None
        await seen.wait_for(15)
        for saga, ids in expected.items():
            got = [m.id for m in seen.messages if m.key == saga]
            assert got == ids, f"saga {saga} out of order or duplicated"
        assert broker.failures >= 5 and relay.failed_attempts == broker.failures
        assert relay.sent == 15 and len(relay.outbox) == 0  # type: ignore[arg-type]
        await publisher.close()


async def test_outbox_accepts_commits_while_broker_is_down_and_close_drains() -> None:
    inner = MemoryBroker()
    async with FaultyBroker(inner, native_transactions=False, fail_first=4) as broker:
        outbox = MemoryOutbox()
        publisher = SagaEventPublisher(broker, PublisherConfig(outbox=outbox))
        events = [make_event(saga_id="z") for _ in range(3)]
        async with publisher.transaction("tx-down") as tx:
            for event in events:
                await tx.publish_event(event)
        assert outbox.added == 3  # committed = stored, whatever the broker does
        await publisher.close()
        assert outbox.sent == 3 and len(outbox) == 0
        assert [m.id for m in inner._topics["saga.events"].log] == [e.id for e in events]


async def test_explicit_outbox_is_used_even_with_native_transactions(
        broker: MemoryBroker) -> None:
    outbox = MemoryOutbox()
    publisher = SagaEventPublisher(broker, PublisherConfig(outbox=outbox))
    assert uses_outbox(publisher)
    await publisher.publish_with_transaction(make_event())
    await publisher.close()
    assert (outbox.added, outbox.sent, broker.published) == (1, 1, 1)
