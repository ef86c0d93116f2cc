"""Property: whatever fails where, a saga ends terminal, compensates exactly its completed steps
(in reverse for sequential strategies) and publishes a well-formed event sequence."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sagamesh.errors import BusinessError
from sagamesh.events import EventType
from sagamesh.retry import FixedDelayRetryPolicy
from sagamesh.saga import (
    BestEffortCompensation,
    ParallelCompensation,
    SagaDefinition,
    SagaState,
    SequentialCompensation,
    StepContext,
)

from .helpers import Recorder, events_of, make_coordinator


@dataclass(frozen=True)
class Plan:
    failures: int  # failing attempts before success
    business: bool  # fails with a BusinessError on the first attempt
    comp_fails: bool  # its compensation always fails


_rarely = st.sampled_from([False, False, False, True])
_plan = st.builds(Plan, st.sampled_from([0, 0, 0, 1, 2, 3]), _rarely, _rarely)
_strategy = st.sampled_from(["sequential", "best_effort", "parallel"])


def _expected(
    plans: list[Plan], attempts: int, cancel_at: int | None
) -> tuple[SagaState, int, list[int]]:
    """(outcome before compensation, number of completed steps, attempts per executed step).

    The step at ``cancel_at`` cancels its own saga during its first attempt: it still finishes
    (successfully or not), a pending retry is dropped, and no later step starts.
    """
    tries = []
    for i, p in enumerate(plans):
        if p.business:
            tries.append(1)
            return SagaState.COMPENSATED, i, tries
        if i == cancel_at and p.failures >= 1:
            tries.append(1)
            cancelled = attempts > 1  # a retry was due: the cancel wins; otherwise it failed
            return (SagaState.CANCELLED if cancelled else SagaState.COMPENSATED), i, tries
        if p.failures >= attempts:
            tries.append(attempts)
            return SagaState.COMPENSATED, i, tries
        tries.append(p.failures + 1)
        if i == cancel_at and i < len(plans) - 1:
            return SagaState.CANCELLED, i + 1, tries
    return SagaState.COMPLETED, len(plans), tries


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plans=st.lists(_plan, min_size=1, max_size=5),
    attempts=st.integers(1, 3),
    strategy=_strategy,
    cancel_at=st.none() | st.integers(0, 4),
)
async def test_random_failure_patterns(
    plans: list[Plan], attempts: int, strategy: str, cancel_at: int | None
) -> None:
    if cancel_at is not None and cancel_at >= len(plans):
        cancel_at = None
    rec = Recorder()
    steps = []
    holder: list[Any] = []
    for i, p in enumerate(plans):

        async def hook(ctx: StepContext, i: int = i) -> None:
            if i == cancel_at and ctx.attempt == 1:
                await holder[0].cancel_saga(ctx.saga_id, "prop")

        def fail(attempt: int, p: Plan = p) -> BaseException | None:
            if p.business:
                return BusinessError("no", "business says no")
            return ConnectionError("flaky") if attempt <= p.failures else None

        def comp_fail(attempt: int, p: Plan = p) -> BaseException | None:
            return ConnectionError("undo failed") if p.comp_fails else None

        steps.append(rec.step(f"s{i}", fail=fail, comp_fail=comp_fail, hook=hook))
    compensation: Any = {
        "sequential": SequentialCompensation(),
        "best_effort": BestEffortCompensation(),
        "parallel": ParallelCompensation(),
    }[strategy]
    definition = SagaDefinition(
        "prop",
        steps=steps,
        retry_policy=FixedDelayRetryPolicy(attempts, 0),
        compensation=compensation,
    )
    coordinator, publisher = make_coordinator()
    holder.append(coordinator)
    instance = await coordinator.start_saga(definition, [])
    final = await coordinator.wait_for_completion(instance.id, timeout=10)
    await coordinator.close()

    outcome, done, tries = _expected(plans, attempts, cancel_at)
    event(f"final state {final.state.value}")
    # executions: each step as often as the model says, in order
    assert rec.executed() == [f"s{i}" for i, n in enumerate(tries) for _ in range(n)]
    assert final.state.is_terminal
    completed = [f"s{i}" for i in range(done)]
    comp_calls = rec.compensated()
    if outcome is SagaState.COMPLETED:
        assert final.state is SagaState.COMPLETED and comp_calls == []
        assert final.result == [f"s{i}" for i in range(len(plans))]
    else:
        reverse = list(reversed(completed))
        failing = {f"s{i}" for i in range(done) if plans[i].comp_fails}
        if strategy == "sequential":
            attempted: list[str] = []
            for s in reverse:
                attempted.append(s)
                if s in failing:
                    break
        else:
            attempted = reverse
        expected_calls = Counter({s: attempts if s in failing else 1 for s in attempted})
        assert Counter(comp_calls) == expected_calls
        assert set(comp_calls) <= set(completed)  # never a step that did not complete
        if strategy != "parallel":
            assert list(dict.fromkeys(comp_calls)) == attempted  # reverse order
        any_failed = bool(failing & set(attempted))
        assert final.state is (SagaState.FAILED if any_failed else outcome)
        if any_failed:
            assert final.error is not None and final.error.cause is not None

    events = events_of(publisher, instance.id)
    kinds = [e.type for e in events]
    assert kinds[0] is EventType.SAGA_STARTED
    terminal = {EventType.SAGA_COMPLETED, EventType.SAGA_FAILED, EventType.SAGA_CANCELLED}
    assert kinds[-1] in terminal and sum(k in terminal for k in kinds) == 1
    assert events[-1].new_state == final.state.value
    assert kinds.count(EventType.SAGA_STEP_STARTED) == sum(tries)
    assert kinds.count(EventType.SAGA_STEP_COMPLETED) == done
    assert kinds.count(EventType.COMPENSATION_STEP_STARTED) == len(set(comp_calls))
    assert kinds.count(EventType.COMPENSATION_STARTED) == (1 if comp_calls else 0)
    per_step: dict[str, list[int]] = {}
    for e in events:
        if e.type is EventType.SAGA_STEP_STARTED:
            per_step.setdefault(e.step_id, []).append(e.attempt)
    assert all(a == list(range(1, len(a) + 1)) for a in per_step.values())
    assert {(e.saga_id, e.instance_id) for e in events} == {(instance.id, coordinator.instance_id)}
