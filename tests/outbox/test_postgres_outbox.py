"""PostgreSQL outbox: all-or-none writes (also inside the user's transaction), a relay that
publishes at least once and in order per key, leader-only relaying, wake-up on commit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from sagamesh.brokers.memory import MemoryBroker
from sagamesh.errors import TransactionError
from sagamesh.events import EventType, SagaEvent
from sagamesh.message import Message
from sagamesh.outbox import PostgresOutbox, outbox_relay
from sagamesh.publishing import Outbox, PublisherConfig
from sagamesh.publishing.publisher import SagaEventPublisher
from sagamesh.retry import FixedDelayRetryPolicy

from .conftest import DedupingConsumer, FlakyBroker

pytestmark = pytest.mark.postgres


@pytest.fixture
async def outbox(postgres_dsn: str, unique: str) -> AsyncIterator[PostgresOutbox]:
    box = PostgresOutbox(postgres_dsn, schema=f"test_outbox_{unique}")
    await box.migrate()
    try:
        yield box
    finally:
        pool = await box.pool()
        await pool.execute(f'DROP SCHEMA IF EXISTS "{box.schema}" CASCADE')
        await box.close()


def _msgs(key: str, n: int, start: int = 0) -> list[Message]:
    return [
        Message(id=f"{key}-{i}", topic="orders", body=f"{key}:{i}".encode(), key=key,
                headers={"sagamesh-saga-id": key})
        for i in range(start, start + n)
    ]


async def test_is_the_publishers_outbox(outbox: PostgresOutbox) -> None:
    assert isinstance(outbox, Outbox)


async def test_add_pending_mark_sent(outbox: PostgresOutbox) -> None:
    await outbox.add("tx-1", _msgs("a", 3))
    await outbox.add("tx-2", _msgs("b", 2))
    pending = await outbox.pending(10)
    assert [r.message.id for r in pending] == ["a-0", "a-1", "a-2", "b-0", "b-1"]
    assert [r.tx_id for r in pending] == ["tx-1"] * 3 + ["tx-2"] * 2
    assert pending[0].message == _msgs("a", 1)[0]  # body, key and headers round-trip
    await outbox.mark_sent([pending[0].id, pending[3].id])
    assert [r.message.id for r in await outbox.pending(10)] == ["a-1", "a-2", "b-1"]
    assert await outbox.unsent_count() == 3
    with pytest.raises(TransactionError):
        await outbox.add("tx-3", ["not a message"])  # type: ignore[list-item]
    assert await outbox.unsent_count() == 3


async def test_users_transaction_commits_business_rows_and_events_together(
    outbox: PostgresOutbox, postgres_dsn: str
) -> None:
    conn = await asyncpg.connect(postgres_dsn)
    table = f'"{outbox.schema}".orders'
    try:
        await conn.execute(f"CREATE TABLE {table} (id text PRIMARY KEY)")
        async with conn.transaction():
            await conn.execute(f"INSERT INTO {table} VALUES ('o-1')")
            await outbox.add("o-1", _msgs("o-1", 2), connection=conn)
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {table} VALUES ('o-2')")
                await outbox.add("o-2", _msgs("o-2", 2), connection=conn)
                raise RuntimeError("payment declined")
        assert [r["id"] for r in await conn.fetch(f"SELECT id FROM {table}")] == ["o-1"]
        assert [r.message.id for r in await outbox.pending(10)] == ["o-1-0", "o-1-1"]
    finally:
        await conn.close()


async def test_relay_delivers_every_message_once_per_id_in_order_despite_failures(
    outbox: PostgresOutbox,
) -> None:
    broker = MemoryBroker()
    await broker.connect()
    consumer = DedupingConsumer()
    await broker.subscribe("orders", consumer.handle, group="g", ordered=True)
    flaky = FlakyBroker(broker, failure_rate=0.15)
    relay = outbox_relay(
        outbox, flaky, poll_interval=0.2, batch_size=20,  # type: ignore[arg-type]
        retry_policy=FixedDelayRetryPolicy(max_attempts=1_000_000, delay=0.02),
    )
    try:
        for k in range(10):
            await outbox.add(f"tx-{k}", _msgs(f"k{k}", 5))
        await consumer.wait_for(50)
    finally:
        await relay.close(drain_within=5)
        await broker.close()
    assert flaky.failures > 0
    for k in range(10):
        assert consumer.processed[f"k{k}"] == [f"k{k}-{i}" for i in range(5)]
    assert await outbox.unsent_count() == 0


async def test_notify_wakes_the_relay_without_polling(outbox: PostgresOutbox) -> None:
    broker = MemoryBroker()
    await broker.connect()
    consumer = DedupingConsumer()
    await broker.subscribe("orders", consumer.handle)
    relay = outbox_relay(outbox, broker, poll_interval=3600)
    try:
        await relay.drain(5)  # the relay is leader and listening before the write
        assert await outbox.pending(1) == []
        await outbox.add("tx", _msgs("n", 1))
        await consumer.wait_for(1, within=10)  # an hour-long poll: only NOTIFY can do this
    finally:
        await relay.close(drain=False)
        await broker.close()
    assert consumer.processed["n"] == ["n-0"]


async def test_concurrent_pending_calls_share_the_leader_connection(
    outbox: PostgresOutbox,
) -> None:
    """The relay and an operator (or a test) may ask at once: the one leader connection takes
    their queries in turn instead of asyncpg's "another operation is in progress"."""
    await outbox.add("tx", _msgs("c", 3))
    first, second, third = await asyncio.gather(*(outbox.pending(10) for _ in range(3)))
    assert [r.message.id for r in first] == ["c-0", "c-1", "c-2"]
    assert second == first and third == first


async def test_only_the_leader_relays_and_a_standby_takes_over(
    outbox: PostgresOutbox, postgres_dsn: str
) -> None:
    standby = PostgresOutbox(postgres_dsn, schema=outbox.schema)
    try:
        await outbox.add("tx", _msgs("l", 2))
        assert len(await outbox.pending(10)) == 2  # first caller becomes leader
        assert await standby.pending(10) == []
        await outbox.close()  # the leader's connection goes away (as when its process dies)
        assert [r.message.id for r in await standby.pending(10)] == ["l-0", "l-1"]
    finally:
        await standby.close()


async def test_publisher_transactions_go_through_the_postgres_outbox(
    outbox: PostgresOutbox,
) -> None:
    broker = MemoryBroker()
    await broker.connect()
    consumer = DedupingConsumer()
    await broker.subscribe("saga.events", consumer.handle)
    publisher = SagaEventPublisher(broker, PublisherConfig(outbox=outbox))
    try:
        async with publisher.transaction("tx-ok") as tx:
            await tx.publish_event(SagaEvent(saga_id="s1", type=EventType.SAGA_STARTED, id="e1"))
            await tx.publish_event(SagaEvent(saga_id="s1", type=EventType.SAGA_COMPLETED, id="e2"))
        with pytest.raises(RuntimeError):
            async with publisher.transaction("tx-bad") as tx:
                await tx.publish_event(SagaEvent(saga_id="s2", type=EventType.SAGA_STARTED))
                raise RuntimeError("abort")
        await consumer.wait_for(2)
    finally:
        await publisher.close()
        await broker.close()
    assert consumer.processed["s1"] == ["e1", "e2"]
    assert "s2" not in consumer.processed
    pool = await outbox.pool()
    rows = await pool.fetch(f'SELECT tx_id, sent_at FROM "{outbox.schema}".outbox ORDER BY id')
    assert [(r["tx_id"], r["sent_at"] is not None) for r in rows] == [("tx-ok", True)] * 2
    await asyncio.sleep(0)
