"""The priority dispatcher on its own: slots, priority order, per-key order, bounds, drain."""

from __future__ import annotations

import asyncio
import random

import pytest

from sagamesh.consuming import DispatcherDrainedError, PriorityDispatcher


async def _run_in_order(d: PriorityDispatcher, items: list[tuple[str, str | None, int]],
                        order: list[str]) -> list[asyncio.Task[None]]:
    """Start one task per (name, key, priority); each records its name when it gets a slot
    and holds it until its release event is set."""

    async def one(name: str, key: str | None, prio: int) -> None:
        await d.acquire(key, prio)
        order.append(name)
        d.release(key)

    tasks = []
    for name, key, prio in items:
        tasks.append(asyncio.create_task(one(name, key, prio)))
        await asyncio.sleep(0)  # arrival order = list order
    return tasks


async def test_fast_path_then_highest_priority_first_fifo_among_equals() -> None:
    d = PriorityDispatcher(1, ordered=False)
    await d.acquire(None, 0)  # free slot: granted at once
    assert (d.running, d.pending) == (1, 0)
    order: list[str] = []
    tasks = await _run_in_order(d, [("1-a", None, 1), ("5-a", None, 5), ("3", None, 3),
                                    ("5-b", None, 5), ("1-b", None, 1), ("9", None, 9)], order)
    assert d.pending == 6 and order == []
    d.release(None)
    await asyncio.gather(*tasks)
    assert order == ["9", "5-a", "5-b", "3", "1-a", "1-b"]
    assert (d.running, d.pending) == (0, 0)


async def test_a_later_event_of_a_saga_never_overtakes_even_with_higher_priority() -> None:
    d = PriorityDispatcher(4, ordered=True)
    await d.acquire("a", 0)  # a1 runs
    order: list[str] = []
    tasks = await _run_in_order(d, [("a2", "a", 9), ("b1", "b", 5), ("a3", "a", 0)], order)
    assert order == ["b1"]  # b runs concurrently; a2 and a3 wait for a1
    assert d.pending == 2
    d.release("a")  # a1 settled
    await asyncio.gather(*tasks)
    assert order == ["b1", "a2", "a3"]


async def test_random_load_keeps_per_key_order_bounds_slots_and_runs_keys_in_parallel() -> None:
    rng = random.Random(7)
    d = PriorityDispatcher(8, ordered=True)
    keys = [f"k{i}" for i in range(50)]
    seen: dict[str, list[int]] = {k: [] for k in keys}
    active: set[str] = set()
    peak = 0

    async def delivery(k: str, n: int, prio: int) -> None:
        nonlocal peak
        await d.acquire(k, prio)
        assert k not in active, "two deliveries of one key ran at once"
        active.add(k)
        peak = max(peak, len(active))
        await asyncio.sleep(0)
        seen[k].append(n)
        active.discard(k)
        d.release(k)

    counters = dict.fromkeys(keys, 0)
    tasks = []
    for _ in range(2000):
        k = rng.choice(keys)
        tasks.append(asyncio.create_task(delivery(k, counters[k], rng.randint(0, 5))))
        counters[k] += 1
        if rng.random() < 0.1:
            await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert sum(len(v) for v in seen.values()) == 2000
    for k, ns in seen.items():
        assert ns == list(range(len(ns))), k
    assert 1 < peak <= 8


async def test_a_cancelled_waiter_gives_its_turn_to_the_next_of_its_key() -> None:
    d = PriorityDispatcher(1, ordered=True)
    await d.acquire("a")
    second = asyncio.create_task(d.acquire("a"))
    third = asyncio.create_task(d.acquire("a"))
    await asyncio.sleep(0)
    second.cancel()
    await asyncio.sleep(0)
    d.release("a")
    await asyncio.wait_for(third, 1)
    assert (d.running, d.pending) == (1, 0)


async def test_drain_fails_waiters_and_keeps_running_slots() -> None:
    d = PriorityDispatcher(1, ordered=True)
    await d.acquire("a")
    waiters = [asyncio.create_task(d.acquire(k)) for k in ("a", "b", "c")]
    await asyncio.sleep(0)
    assert d.drain() == 3
    for w in waiters:
        with pytest.raises(DispatcherDrainedError):
            await w
    assert (d.pending, d.running) == (0, 1)
    idle = asyncio.create_task(d.wait_idle())
    await asyncio.sleep(0)
    assert not idle.done()
    d.release("a")
    await asyncio.wait_for(idle, 1)


def test_slots_must_be_positive() -> None:
    with pytest.raises(ValueError):
        PriorityDispatcher(0)


async def test_try_acquire_takes_a_free_slot_but_never_jumps_a_key_or_the_queue() -> None:
    d = PriorityDispatcher(2, ordered=True)
    assert d.try_acquire("a")
    assert not d.try_acquire("a")  # the key is busy: it must wait its turn
    assert d.try_acquire("b")
    assert not d.try_acquire("c")  # no slot left
    waiter = asyncio.ensure_future(d.acquire("c"))
    await asyncio.sleep(0)
    d.release("a")
    await asyncio.sleep(0)
    assert waiter.done()  # "c" got the freed slot
    d.release("b")
    assert d.try_acquire("d")  # a free slot and nobody waiting
    d.release("c")
    d.release("d")
    assert d.running == 0 and d.pending == 0
