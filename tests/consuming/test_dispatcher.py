"""The priority dispatcher on its own: priority order, per-key order, backpressure, drain."""

from __future__ import annotations

import asyncio
import random

import pytest

from sagamesh.consuming import PriorityDispatcher


async def test_hands_out_highest_priority_first_fifo_among_equals() -> None:
    d: PriorityDispatcher[str] = PriorityDispatcher(100, ordered=False)
    for i, prio in enumerate([1, 5, 3, 5, 1, 9]):
        await d.put(f"{prio}-{i}", priority=prio)
    got = []
    for _ in range(6):
        item, _key = await d.get()
        got.append(item)
        d.done(None)
    assert got == ["9-5", "5-1", "5-3", "3-2", "1-0", "1-4"]


async def test_items_of_one_key_never_overtake_even_with_higher_priority() -> None:
    d: PriorityDispatcher[str] = PriorityDispatcher(100, ordered=True)
    await d.put("a1", priority=0, key="a")
    await d.put("a2", priority=9, key="a")  # higher priority, but behind a1
    await d.put("b1", priority=5, key="b")
    first, _ = await d.get()
    second, k2 = await d.get()
    assert (first, second) == ("b1", "a1")  # a2 is not eligible while a1 is out
    assert d.pending == 1 and d.running == 2
    get_next = asyncio.create_task(d.get())
    await asyncio.sleep(0)
    assert not get_next.done()  # nothing eligible: a2 waits for a1
    d.done(k2)  # a1 settled
    third, _ = await asyncio.wait_for(get_next, 1)
    assert third == "a2"


async def test_random_load_keeps_per_key_order_and_runs_keys_concurrently() -> None:
    rng = random.Random(7)
    d: PriorityDispatcher[tuple[str, int]] = PriorityDispatcher(64, ordered=True)
    keys = [f"k{i}" for i in range(50)]
    seen: dict[str, list[int]] = {k: [] for k in keys}
    active: set[str] = set()
    max_parallel = 0

    async def producer() -> None:
        counters = dict.fromkeys(keys, 0)
        for _ in range(2000):
            k = rng.choice(keys)
            await d.put((k, counters[k]), priority=rng.randint(0, 5), key=k)
            counters[k] += 1

    async def worker() -> None:
        nonlocal max_parallel
        while True:
            (k, n), key = await d.get()
            assert k not in active, "two items of one key ran at once"
            active.add(k)
            max_parallel = max(max_parallel, len(active))
            await asyncio.sleep(0)
            seen[k].append(n)
            active.discard(k)
            d.done(key)

    workers = [asyncio.create_task(worker()) for _ in range(8)]
    await producer()
    await asyncio.wait_for(d.wait_idle(), 10)
    for w in workers:
        w.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    assert sum(len(v) for v in seen.values()) == 2000
    for k, ns in seen.items():
        assert ns == list(range(len(ns))), k
    assert max_parallel > 1


async def test_put_blocks_when_full_until_a_worker_takes_an_item() -> None:
    d: PriorityDispatcher[int] = PriorityDispatcher(2, ordered=False)
    await d.put(1)
    await d.put(2)
    blocked = asyncio.create_task(d.put(3))
    await asyncio.sleep(0.01)
    assert not blocked.done() and d.pending == 2
    await d.get()
    await asyncio.wait_for(blocked, 1)
    assert d.pending == 2


async def test_drain_pending_returns_what_was_not_handed_out() -> None:
    d: PriorityDispatcher[str] = PriorityDispatcher(10, ordered=True)
    for item, key in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("c1", "c")]:
        await d.put(item, key=key)
    taken, key = await d.get()
    left = d.drain_pending()
    assert taken == "a1"
    assert sorted(left) == ["a2", "b1", "c1"]
    assert d.pending == 0 and d.running == 1
    d.done(key)
    await asyncio.wait_for(d.wait_idle(), 1)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        PriorityDispatcher(0)
