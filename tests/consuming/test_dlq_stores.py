"""The DLQStore contract, on the memory store and on the real Redis; a DLQ kept in Redis is
seen by a second handler (another process, e.g. the CLI) and recovered from there."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sagamesh.brokers.memory import MemoryBroker
from sagamesh.consuming import (
    ConsumerConfig,
    DeadLetterEntry,
    DeadLetterQueueHandler,
    DLQConfig,
    DLQStore,
    EventConsumer,
    EventRouter,
    HandlerContext,
    MemoryDLQStore,
    RedisDLQStore,
)
from sagamesh.events import SagaEvent
from sagamesh.message import Headers, Message
from sagamesh.retry import NoRetryPolicy

from .consuming_helpers import DLQ, TOPIC, Signal, event, publish, turns_until


async def _cleanup(store: RedisDLQStore) -> None:
    keys = [k async for k in store._redis.scan_iter(match=f"{store.prefix}*")]
    if keys:
        await store._redis.delete(*keys)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest, unique: str) -> AsyncIterator[DLQStore]:
    if request.param == "memory":
        yield MemoryDLQStore()
        return
    redis_url = request.getfixturevalue("redis_url")
    s = RedisDLQStore(redis_url, prefix=f"test:{unique}:dlq:")
    yield s
    await _cleanup(s)
    await s.close()


def _msg(mid: str, attempts: int = 1) -> Message:
    return Message(id=mid, topic=DLQ, key="k", body=b"\x00\x01body",
                   headers={Headers.ORIGINAL_TOPIC: TOPIC, Headers.ATTEMPTS: str(attempts)})


async def test_store_contract(store: DLQStore) -> None:
    a = await store.put(DeadLetterEntry(_msg("a"), 100.0))
    b = await store.put(DeadLetterEntry(_msg("b"), 50.0))
    assert b.version > a.version
    assert [e.id for e in await store.list()] == ["b", "a"]  # oldest first
    got = await store.get("a")
    assert got is not None and got.message == _msg("a") and got.received_at == 100.0
    assert got.version == a.version and got.original_topic == TOPIC
    assert await store.get("zzz") is None

    newer = await store.put(DeadLetterEntry(_msg("a", attempts=2), 200.0))  # came back
    assert not await store.delete("a", version=a.version)  # stale version: kept
    kept = await store.get("a")
    assert kept is not None and kept.attempts == 2
    assert await store.delete("a", version=newer.version)
    assert not await store.delete("a")
    assert await store.delete("b")
    assert await store.list() == []


@pytest.mark.redis
async def test_a_redis_dlq_is_shared_between_handlers(redis_url: str, unique: str) -> None:
    router = EventRouter()
    fixed = False
    ok = Signal()

    @router.handler(handler_id="h")
    async def h(ev: SagaEvent, ctx: HandlerContext) -> None:
        if not fixed:
            raise RuntimeError("down")
        ok.hit()

    prefix = f"test:{unique}:dlq:"
    store_a = RedisDLQStore(redis_url, prefix=prefix)
    store_b = RedisDLQStore(redis_url, prefix=prefix)
    try:
        async with MemoryBroker() as broker:
            collecting = DeadLetterQueueHandler(broker, DLQConfig(topic=DLQ, store=store_a))
            consumer = EventConsumer(broker, router, ConsumerConfig(
                group="g", retry=NoRetryPolicy(), dlq_topic=DLQ))
            async with collecting, consumer:
                evs = [event(f"s{i}") for i in range(3)]
                await publish(broker, *evs)
                await turns_until(lambda: collecting.metrics.received == 3)
                # Another handler (another process) reads the same DLQ and recovers from it.
                operator = DeadLetterQueueHandler(broker, DLQConfig(topic=DLQ, store=store_b))
                listed = await operator.list()
                assert sorted(e.id for e in listed) == sorted(e.id for e in evs)
                assert all(e.reason.startswith("retries_exhausted") for e in listed)
                fixed = True
                for e in evs:
                    assert (await operator.recover(e.id)).recovered
                await ok.wait(3)
                assert await collecting.list() == []
    finally:
        await _cleanup(store_a)
        await store_a.close()
        await store_b.close()
