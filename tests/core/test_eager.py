"""The eager stepping behind per-attempt timeouts: no timer when nothing waits, and a
suspended attempt continues (and is cancelled) exactly like a normally awaited coroutine."""

from __future__ import annotations

import asyncio

import pytest

from sagamesh._eager import DONE, Rest, run_eager, step


async def test_a_coroutine_that_never_waits_completes_in_the_step() -> None:
    ran: list[int] = []

    async def quick() -> None:
        ran.append(1)

    assert step(quick()) is DONE and ran == [1]


async def test_a_synchronous_error_propagates_from_the_step() -> None:
    async def broken() -> None:
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        step(broken())


async def test_a_waiting_coroutine_resumes_with_its_result_and_errors() -> None:
    order: list[str] = []

    async def slow(n: int) -> int:
        order.append("start")
        await asyncio.sleep(0)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(fut.set_result, n * 2)
        value = await fut
        order.append("end")
        return value

    rest = step(slow(21))
    assert rest is not DONE and order == ["start"]
    assert await rest == 42 and order == ["start", "end"]

    async def fails_later() -> None:
        await asyncio.sleep(0)
        raise KeyError("late")

    with pytest.raises(KeyError):
        await step(fails_later())


async def test_timeout_cancels_into_the_coroutine_and_its_cleanup_runs() -> None:
    cleaned: list[str] = []

    async def hangs() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            cleaned.append("finally")

    rest = step(hangs())
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await rest
    assert cleaned == ["finally"]


async def test_outer_cancel_reaches_a_coroutine_that_may_swallow_it_once() -> None:
    steps: list[str] = []

    async def stubborn() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            steps.append("cancelled")
            await asyncio.sleep(0)  # suspends again after the cancel: must still be driven
            steps.append("resumed")
            return "finished anyway"
        return "never"

    async def runner() -> str:
        rest = step(stubborn())
        return await rest  # type: ignore[no-any-return]

    task = asyncio.create_task(runner())
    await asyncio.sleep(0)
    task.cancel()
    assert await task == "finished anyway"
    assert steps == ["cancelled", "resumed"]


async def test_run_eager_keeps_the_result_of_a_coroutine_that_never_waits() -> None:
    async def quick() -> str:
        return "outcome"

    assert run_eager(quick()) == "outcome"


async def test_run_eager_hands_back_the_rest_of_a_waiting_coroutine() -> None:
    order: list[str] = []

    async def slow() -> str:
        order.append("start")
        await asyncio.sleep(0)
        order.append("end")
        return "late"

    rest = run_eager(slow())
    assert isinstance(rest, Rest) and order == ["start"]  # ran up to its first wait only
    assert await rest == "late" and order == ["start", "end"]

    async def broken() -> None:
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        run_eager(broken())
