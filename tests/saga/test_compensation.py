"""Compensation strategies: order, real concurrency, failure handling, selection."""

from __future__ import annotations

import asyncio
from typing import Any

from sagamesh.events import ErrorType, EventType
from sagamesh.retry import FixedDelayRetryPolicy
from sagamesh.saga import (
    BestEffortCompensation,
    CompensationTarget,
    CustomCompensation,
    ParallelCompensation,
    SagaDefinition,
    SagaState,
    SequentialCompensation,
    StepContext,
    StepStatus,
    step,
)

from .helpers import Recorder, business, declined, events_of, make_coordinator


def _steps(rec: Recorder, n: int, **last: Any) -> list[Any]:
    return [rec.step(f"s{i}") for i in range(n)] + [rec.step("last", fail=business, **last)]


async def _run(definition: SagaDefinition) -> tuple[Any, Any, Any]:
    coordinator, publisher = make_coordinator()
    instance = await coordinator.start_saga(definition, [])
    final = await coordinator.wait_for_completion(instance.id, timeout=10)
    await coordinator.close()
    return final, publisher, coordinator


async def test_sequential_compensates_completed_steps_in_reverse() -> None:
    rec = Recorder()
    final, publisher, _ = await _run(
        SagaDefinition("seq", steps=_steps(rec, 4), compensation=SequentialCompensation(5))
    )
    assert final.state is SagaState.COMPENSATED
    assert rec.compensated() == ["s3", "s2", "s1", "s0"]
    comp_events = [
        (e.type, e.step_id)
        for e in events_of(publisher, final.id)
        if e.type.value.startswith("compensation.step.completed")
    ]
    assert [s for _, s in comp_events] == ["s3", "s2", "s1", "s0"]


async def test_parallel_compensation_runs_all_at_once() -> None:
    n = 5
    started = 0
    all_in = asyncio.Event()
    overlap: list[int] = []
    active = 0

    async def comp(ctx: StepContext, data: Any) -> None:
        nonlocal started, active
        started += 1
        active += 1
        overlap.append(active)
        if started == n:
            all_in.set()
        # only returns once every compensation has begun: sequential execution would time out
        await asyncio.wait_for(all_in.wait(), timeout=5)
        active -= 1

    async def ok(ctx: StepContext, data: Any) -> Any:
        return data

    steps = [step(f"s{i}", ok, comp) for i in range(n)]
    steps.append(step("boom", declined))
    final, _, _ = await _run(
        SagaDefinition("par", steps=steps, compensation=ParallelCompensation(timeout=10))
    )
    assert final.state is SagaState.COMPENSATED
    assert max(overlap) == n  # all five compensations were in flight together


async def test_sequential_stops_at_first_failed_compensation_and_fails_with_chain() -> None:
    rec = Recorder()
    steps = [
        rec.step("s0"),
        rec.step("s1", comp_fail=lambda a: RuntimeError("refund api down")),
        rec.step("s2"),
        rec.step("last", fail=business),
    ]
    final, publisher, coordinator = await _run(SagaDefinition("seqfail", steps=steps))
    assert rec.compensated() == ["s2", "s1"]  # s0 never reached
    assert final.state is SagaState.FAILED
    assert final.error is not None
    assert final.error.type is ErrorType.COMPENSATION
    assert "refund api down" in final.error.message
    assert final.error.cause is not None and final.error.cause.code == "declined"
    assert final.error.details["failed_steps"] == ["s1"]
    types = [e.type for e in events_of(publisher, final.id)]
    assert EventType.COMPENSATION_FAILED in types
    assert EventType.COMPENSATION_COMPLETED not in types
    assert types[-1] is EventType.SAGA_FAILED
    assert events_of(publisher, final.id)[-1].new_state == "failed"
    assert coordinator.get_metrics().failed_sagas == 1
    assert coordinator.get_metrics().compensated_sagas == 0


async def test_compensation_failing_after_its_retries_is_failed_not_compensated() -> None:
    rec = Recorder()
    steps = [
        rec.step("s0", comp_fail=lambda a: ConnectionError(f"down {a}")),
        rec.step("last", fail=business),
    ]
    final, _, _ = await _run(
        SagaDefinition("comp-exhaust", steps=steps, retry_policy=FixedDelayRetryPolicy(3, 0.001))
    )
    assert [c[2] for c in rec.calls if c[0] == "comp"] == [1, 2, 3]
    assert final.state is SagaState.FAILED
    assert final.error is not None and "down 3" in final.error.message
    assert final.error.cause is not None and final.error.cause.code == "declined"


async def test_best_effort_continues_past_failures() -> None:
    rec = Recorder()
    steps = [
        rec.step("s0"),
        rec.step("s1", comp_fail=lambda a: RuntimeError("nope")),
        rec.step("s2"),
        rec.step("last", fail=business),
    ]
    coordinator, _ = make_coordinator()
    d = SagaDefinition("best", steps=steps, compensation=BestEffortCompensation())
    final = await coordinator.wait_for_completion(
        (await coordinator.start_saga(d, [])).id, timeout=10
    )
    assert rec.compensated() == ["s2", "s1", "s0"]
    assert final.state is SagaState.FAILED
    records = {s.step_id: s.status for s in await coordinator.get_step_states(final.id)}
    assert records == {
        "s0": StepStatus.COMPENSATED,
        "s1": StepStatus.COMPENSATION_FAILED,
        "s2": StepStatus.COMPENSATED,
        "last": StepStatus.FAILED,
    }
    await coordinator.close()


async def test_custom_selects_and_orders() -> None:
    rec = Recorder()
    seen: list[CompensationTarget] = []

    def should(target: CompensationTarget) -> bool:
        seen.append(target)
        return target.step_id != "s1"

    strategy = CustomCompensation(timeout=5, should_compensate=should, order=["s0", "s3"])
    final, _, _ = await _run(
        SagaDefinition("custom", steps=_steps(rec, 4), compensation=strategy)
    )
    assert final.state is SagaState.COMPENSATED
    assert rec.compensated() == ["s0", "s3", "s2"]  # listed first, the rest in reverse; s1 skipped
    assert all(t.reason is not None and t.reason.code == "declined" for t in seen)
    assert {t.step_id: t.output for t in seen}["s2"] == ["s0", "s1", "s2"]


async def test_custom_can_decline_compensation_for_business_errors() -> None:
    rec = Recorder()
    strategy = CustomCompensation(
        should_compensate=lambda t: t.reason is None or t.reason.type is not ErrorType.BUSINESS
    )
    final, publisher, _ = await _run(
        SagaDefinition("no-comp", steps=_steps(rec, 2), compensation=strategy)
    )
    assert rec.compensated() == []
    assert final.state is SagaState.COMPENSATED
    types = [e.type for e in events_of(publisher, final.id)]
    assert EventType.COMPENSATION_STARTED not in types


async def test_compensation_timeout_cancels_a_hanging_compensation() -> None:
    cancelled = asyncio.Event()

    async def ok(ctx: StepContext, data: Any) -> Any:
        return data

    async def hang(ctx: StepContext, data: Any) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    steps = [step("s0", ok, hang), step("last", declined)]
    final, _, _ = await _run(
        SagaDefinition("comp-timeout", steps=steps, compensation=SequentialCompensation(0.05))
    )
    assert cancelled.is_set()
    assert final.state is SagaState.FAILED
    assert final.error is not None and "exceeded 0.05s" in final.error.message
