"""RedisIdempotencyStore against the real Redis, and a consumer skipping duplicates with it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sagamesh.brokers.memory import MemoryBroker
from sagamesh.consuming import (
    ConsumerConfig,
    EventConsumer,
    EventRouter,
    HandlerContext,
    RedisIdempotencyStore,
)
from sagamesh.events import SagaEvent

from .consuming_helpers import Signal, event, publish

pytestmark = pytest.mark.redis


@pytest.fixture
async def store(redis_url: str, unique: str) -> AsyncIterator[RedisIdempotencyStore]:
    s = RedisIdempotencyStore(redis_url, prefix=f"test:{unique}:", ttl=30)
    yield s
    keys = [k async for k in s._redis.scan_iter(match=f"test:{unique}:*")]
    if keys:
        await s._redis.delete(*keys)
    await s.close()


async def test_marks_and_finds_keys_with_ttl(store: RedisIdempotencyStore) -> None:
    assert not await store.contains("e1:h")
    await store.add("e1:h")
    assert await store.contains("e1:h")
    assert not await store.contains("e2:h")
    ttl_ms = await store._redis.pttl(store.prefix + "e1:h")
    assert 0 < ttl_ms <= 30_000


async def test_sub_second_ttl_is_set_in_milliseconds(redis_url: str, unique: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    s = RedisIdempotencyStore(client=client, prefix=f"test:{unique}:", ttl=0.05)
    await s.add("k")
    assert await s.contains("k")
    assert 0 < await client.pttl(s.prefix + "k") <= 50  # Redis drops it after 50 ms
    await s.close()  # not owned: the client stays usable
    assert await client.ping()
    await client.aclose()


async def test_two_consumers_share_one_store_and_skip_duplicates(
        store: RedisIdempotencyStore, unique: str) -> None:
    calls: list[str] = []
    done = Signal()
    router = EventRouter()

    @router.handler(handler_id="h")
    async def h(ev: SagaEvent, ctx: HandlerContext) -> None:
        calls.append(ev.id)
        done.hit()

    ev = event(f"s-{unique}")
    async with MemoryBroker() as broker:
        config = ConsumerConfig(group=f"g-{unique}", idempotency=store)
        async with EventConsumer(broker, router, config) as consumer:
            await publish(broker, ev)
            await done.wait(1)
        # A second consumer (a fresh process would look the same) sees the duplicate.
        async with EventConsumer(broker, router, config) as again:
            await publish(broker, ev, event(f"t-{unique}"))
            await done.wait(2)
            metrics = again.get_metrics()
    assert calls.count(ev.id) == 1 and len(calls) == 2
    assert metrics.duplicates == 1
    assert consumer.get_metrics().acked == 1


def test_needs_exactly_one_of_url_or_client() -> None:
    with pytest.raises(ValueError):
        RedisIdempotencyStore()
