"""Redis outbox: the stream the Redis storage appends to atomically with the state, relayed at
least once and in order per key by the leader only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sagamesh.brokers.memory import MemoryBroker
from sagamesh.errors import TransactionError
from sagamesh.message import Message
from sagamesh.outbox import RedisOutbox, outbox_relay
from sagamesh.publishing import Outbox
from sagamesh.retry import FixedDelayRetryPolicy
from sagamesh.saga.state import SagaInstance, SagaState
from sagamesh.saga.storage.redis import RedisStateStorage

from .conftest import DedupingConsumer, FlakyBroker

pytestmark = pytest.mark.redis


@pytest.fixture
async def storage(redis_url: str, unique: str) -> AsyncIterator[RedisStateStorage]:
    store = RedisStateStorage(redis_url, prefix=f"test-rbox-{unique}")
    try:
        yield store
    finally:
        await store.drop_prefix()
        await store.close()


@pytest.fixture
async def outbox(storage: RedisStateStorage, redis_url: str) -> AsyncIterator[RedisOutbox]:
    box = RedisOutbox(redis_url, prefix=storage.prefix, leader_ttl=0.5)
    try:
        yield box
    finally:
        await box.close()


def _msgs(key: str, n: int) -> list[Message]:
    return [Message(id=f"{key}-{i}", topic="orders", body=b"%d" % i, key=key,
                    headers={"h": key}) for i in range(n)]


async def test_is_the_publishers_outbox(outbox: RedisOutbox) -> None:
    assert isinstance(outbox, Outbox)


async def test_add_pending_mark_sent(outbox: RedisOutbox) -> None:
    await outbox.add("tx-1", _msgs("a", 3))
    pending = await outbox.pending(10)
    assert [r.message for r in pending] == _msgs("a", 3)
    assert [r.tx_id for r in pending] == ["tx-1"] * 3
    assert [r.id for r in pending] == sorted(r.id for r in pending)
    await outbox.mark_sent([pending[1].id])
    assert [r.message.id for r in await outbox.pending(10)] == ["a-0", "a-2"]
    assert await outbox.unsent_count() == 2
    with pytest.raises(TransactionError):
        await outbox.add("tx-2", [object()])  # type: ignore[list-item]
    assert await outbox.unsent_count() == 2


async def test_storage_writes_land_in_the_outbox_atomically(
    storage: RedisStateStorage, outbox: RedisOutbox
) -> None:
    saga = SagaInstance(id="s-1", definition_id="d", state=SagaState.RUNNING)
    await storage.save_saga(saga, outbox_messages=_msgs("s-1", 2))
    assert [r.message.id for r in await outbox.pending(10)] == ["s-1-0", "s-1-1"]


async def test_only_the_leader_relays_until_its_key_expires(
    outbox: RedisOutbox, storage: RedisStateStorage, redis_url: str
) -> None:
    standby = RedisOutbox(redis_url, prefix=storage.prefix, leader_ttl=0.5)
    try:
        await outbox.add("tx", _msgs("l", 2))
        assert len(await outbox.pending(10)) == 2
        assert await standby.pending(10) == []
        await asyncio.sleep(0.6)  # the leader stopped polling (died): its key expires
        assert len(await standby.pending(10)) == 2
        assert await outbox.pending(10) == []
    finally:
        await standby.close()


async def test_relay_delivers_everything_in_order_despite_failures(outbox: RedisOutbox) -> None:
    broker = MemoryBroker()
    await broker.connect()
    consumer = DedupingConsumer()
    await broker.subscribe("orders", consumer.handle, group="g", ordered=True)
    flaky = FlakyBroker(broker, failure_rate=0.15, seed=3)
    relay = outbox_relay(
        outbox, flaky, poll_interval=0.05, batch_size=20,  # type: ignore[arg-type]
        retry_policy=FixedDelayRetryPolicy(max_attempts=1_000_000, delay=0.02),
    )
    try:
        for k in range(10):
            await outbox.add(f"tx-{k}", _msgs(f"k{k}", 5))
            relay.notify()
        await consumer.wait_for(50)
    finally:
        await relay.close(drain_within=5)
        await broker.close()
    assert flaky.failures > 0
    for k in range(10):
        assert consumer.processed[f"k{k}"] == [f"k{k}-{i}" for i in range(5)]
    assert await outbox.unsent_count() == 0
