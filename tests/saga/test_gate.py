"""The counting gate behind max_concurrent_sagas and worker_pool_size."""

from __future__ import annotations

import asyncio

from sagamesh.saga.gate import Gate


async def test_fifo_handoff_and_capacity() -> None:
    gate = Gate(2)
    assert gate.try_acquire() and gate.try_acquire() and not gate.try_acquire()
    order: list[int] = []

    async def waiter(i: int) -> None:
        await gate.acquire()
        order.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in range(3)]
    await asyncio.sleep(0)
    assert order == [] and gate.in_use == 2
    gate.release()
    await asyncio.sleep(0)
    assert order == [0]
    gate.release()
    gate.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2] and gate.in_use == 2
    gate.release()
    gate.release()
    assert gate.in_use == 0


async def test_cancelled_waiter_does_not_leak_a_unit() -> None:
    gate = Gate(1)
    assert gate.try_acquire()
    first = asyncio.create_task(gate.acquire())
    second = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    gate.release()  # handed to `first` ...
    first.cancel()  # ... which is cancelled before it runs: the unit passes on to `second`
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.wait_for(second, 1)
    assert gate.in_use == 1
    third = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    third.cancel()
    await asyncio.gather(third, return_exceptions=True)
    gate.release()
    assert gate.in_use == 0 and gate.try_acquire()
