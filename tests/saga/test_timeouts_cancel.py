"""Step and saga timeouts cancel the running work; cancel_saga stops after the running step."""

from __future__ import annotations

import asyncio
from typing import Any

from sagamesh.events import ErrorType, EventType
from sagamesh.retry import FixedDelayRetryPolicy
from sagamesh.saga import SagaDefinition, SagaState, StepContext, step

from .helpers import Recorder, events_of, make_coordinator, sequence, wait_until


class Hang:
    """A step body that blocks until released (or cancelled, which it records)."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = 0

    async def __call__(self, ctx: StepContext, data: Any) -> Any:
        self.entered.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return [*data, ctx.step_id]


async def test_step_timeout_cancels_the_step_and_retries() -> None:
    hang = Hang()
    rec = Recorder()
    d = SagaDefinition(
        "step-timeout",
        steps=[rec.step("a"), step("slow", hang, timeout=0.05)],
        retry_policy=FixedDelayRetryPolicy(2, 0.001),
    )
    coordinator, publisher = make_coordinator()
    instance = await coordinator.start_saga(d, [])
    final = await coordinator.wait_for_completion(instance.id, timeout=10)
    assert hang.cancelled == 2  # both attempts were cancelled at their deadline
    assert final.state is SagaState.COMPENSATED
    assert rec.compensated() == ["a"]
    assert final.error is not None and final.error.type is ErrorType.TIMEOUT
    assert final.error.code == "StepTimeoutError"
    failed = [e for e in events_of(publisher, instance.id) if e.type is EventType.SAGA_STEP_FAILED]
    assert [e.attempt for e in failed] == [1, 2]
    assert all(e.duration.total_seconds() >= 0.045 for e in failed)
    await coordinator.close()


async def test_saga_timeout_compensates_and_ends_timed_out() -> None:
    hang = Hang()
    rec = Recorder()
    d = SagaDefinition("saga-timeout", steps=[rec.step("a"), step("slow", hang)], timeout=0.1)
    coordinator, publisher = make_coordinator()
    instance = await coordinator.start_saga(d, [])
    final = await coordinator.wait_for_completion(instance.id, timeout=10)
    assert hang.cancelled == 1
    assert final.state is SagaState.TIMED_OUT
    assert rec.compensated() == ["a"]
    assert final.error is not None and final.error.code == "saga_timed_out"
    assert sequence(publisher, instance.id)[-3:] == [
        ("compensation.step.completed", "a"),
        ("compensation.completed", ""),
        ("saga.timed_out", ""),
    ]
    assert coordinator.get_metrics().timed_out_sagas == 1
    await coordinator.close()


async def test_cancel_lets_the_running_step_finish_then_compensates() -> None:
    hang = Hang()
    rec = Recorder()
    d = SagaDefinition("cancel", steps=[rec.step("a"), step("b", hang), rec.step("c")])
    coordinator, publisher = make_coordinator()
    instance = await coordinator.start_saga(d, [])
    await asyncio.wait_for(hang.entered.wait(), 5)
    await coordinator.cancel_saga(instance.id, "customer changed their mind")
    assert hang.cancelled == 0
    hang.release.set()  # the running step completes normally
    final = await coordinator.wait_for_completion(instance.id, timeout=10)
    assert final.state is SagaState.CANCELLED
    assert rec.executed() == ["a"]  # "c" never started
    assert rec.compensated() == ["a"]
    assert final.error is not None and final.error.message == "customer changed their mind"
    seq = sequence(publisher, instance.id)
    assert ("saga.step.completed", "b") in seq
    assert seq[-1] == ("saga.cancelled", "")
    assert coordinator.get_metrics().cancelled_sagas == 1
    await coordinator.close()


async def test_cancel_interrupts_a_retry_wait() -> None:
    calls: list[int] = []

    async def flaky(ctx: StepContext, data: Any) -> Any:
        calls.append(ctx.attempt)
        raise ConnectionError("down")

    d = SagaDefinition(
        "cancel-retry", steps=[step("a", flaky)], retry_policy=FixedDelayRetryPolicy(5, 30.0)
    )
    coordinator, _ = make_coordinator()
    instance = await coordinator.start_saga(d, [])
    await wait_until(lambda: bool(calls))
    await coordinator.cancel_saga(instance.id, "stop")
    final = await coordinator.wait_for_completion(instance.id, timeout=5)
    assert final.state is SagaState.CANCELLED and calls == [1]
    await coordinator.close()


async def test_cancel_of_a_terminal_saga_changes_nothing() -> None:
    rec = Recorder()
    coordinator, _ = make_coordinator()
    d = SagaDefinition("done", steps=[rec.step("a")])
    final = await coordinator.wait_for_completion(
        (await coordinator.start_saga(d, [])).id, timeout=5
    )
    await coordinator.cancel_saga(final.id, "too late")
    again = await coordinator.get_saga_instance(final.id)
    assert again.state is SagaState.COMPLETED and again.version == final.version
    await coordinator.close()


async def test_saga_deadline_cuts_a_retry_wait_short() -> None:
    calls: list[int] = []

    async def flaky(ctx: StepContext, data: Any) -> Any:
        calls.append(ctx.attempt)
        raise ConnectionError("down")

    rec = Recorder()
    d = SagaDefinition(
        "deadline-retry",
        steps=[rec.step("a"), step("b", flaky)],
        retry_policy=FixedDelayRetryPolicy(5, 30.0),
        timeout=0.2,
    )
    coordinator, _ = make_coordinator()
    loop = asyncio.get_running_loop()
    began = loop.time()
    instance = await coordinator.start_saga(d, [])
    final = await coordinator.wait_for_completion(instance.id, timeout=10)
    assert final.state is SagaState.TIMED_OUT and calls == [1]
    assert loop.time() - began < 10  # ended at the 0.2 s deadline, not after the 30 s delay
    assert rec.compensated() == ["a"]
    await coordinator.close()


async def test_step_timeout_and_saga_timeout_are_told_apart() -> None:
    hang = Hang()
    d = SagaDefinition("both", steps=[step("slow", hang, timeout=30)], timeout=0.05)
    coordinator, _ = make_coordinator()
    final = await coordinator.wait_for_completion(
        (await coordinator.start_saga(d, [])).id, timeout=10
    )
    assert final.state is SagaState.TIMED_OUT and hang.cancelled == 1
    await coordinator.close()
