"""Property: whatever fails where, a saga ends terminal, compensates exactly its completed steps
(in reverse for sequential strategies) and publishes a well-formed event sequence."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
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
)

from .helpers import Recorder, events_of, make_coordinator


@dataclass(frozen=True)
class Plan:
    failures: int  # failing attempts before success
    business: bool  # fails with a BusinessError on the first attempt
    comp_fails: bool  # its compensation always fails


_plan = st.builds(Plan, st.integers(0, 3), st.booleans(), st.booleans())
_strategy = st.sampled_from(["sequential", "best_effort", "parallel"])


def _expected(plans: list[Plan], attempts: int) -> tuple[int | None, list[int]]:
    """(index of the failing step or None, attempts per executed step)."""
    tries = []
    for i, p in enumerate(plans):
        if p.business:
            tries.append(1)
            return i, tries
        if p.failures >= attempts:
            tries.append(attempts)
            return i, tries
        tries.append(p.failures + 1)
    return None, tries


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plans=st.lists(_plan, min_size=1, max_size=5),
    attempts=st.integers(1, 3),
    strategy=_strategy,
)
async def test_random_failure_patterns(plans: list[Plan], attempts: int, strategy: str) -> None:
    rec = Recorder()
    steps = []
    for i, p in enumerate(plans):

        def fail(attempt: int, p: Plan = p) -> BaseException | None:
            if p.business:
                return BusinessError("no", "business says no")
            return ConnectionError("flaky") if attempt <= p.failures else None

        def comp_fail(attempt: int, p: Plan = p) -> BaseException | None:
            return ConnectionError("undo failed") if p.comp_fails else None

        steps.append(rec.step(f"s{i}", fail=fail, comp_fail=comp_fail))
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
    instance = await coordinator.start_saga(definition, [])
    final = await coordinator.wait_for_completion(instance.id, timeout=10)
    await coordinator.close()

    failed_at, tries = _expected(plans, attempts)
    # executions: each step as often as the model says, in order
    assert rec.executed() == [f"s{i}" for i, n in enumerate(tries) for _ in range(n)]
    assert final.state.is_terminal
    completed = [] if failed_at is None else [f"s{i}" for i in range(failed_at)]
    comp_calls = rec.compensated()
    if failed_at is None:
        assert final.state is SagaState.COMPLETED and comp_calls == []
        assert final.result == [f"s{i}" for i in range(len(plans))]
    else:
        reverse = list(reversed(completed))
        failing = {f"s{i}" for i in range(failed_at) if plans[i].comp_fails}
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
        assert final.state is (SagaState.FAILED if any_failed else SagaState.COMPENSATED)
        if any_failed:
            assert final.error is not None and final.error.cause is not None

    events = events_of(publisher, instance.id)
    kinds = [e.type for e in events]
    assert kinds[0] is EventType.SAGA_STARTED
    terminal = {EventType.SAGA_COMPLETED, EventType.SAGA_FAILED}
    assert kinds[-1] in terminal and sum(k in terminal for k in kinds) == 1
    assert events[-1].new_state == final.state.value
    assert kinds.count(EventType.SAGA_STEP_STARTED) == sum(tries)
    assert kinds.count(EventType.SAGA_STEP_COMPLETED) == len(tries) - (failed_at is not None)
    assert kinds.count(EventType.COMPENSATION_STEP_STARTED) == len(set(comp_calls))
    assert kinds.count(EventType.COMPENSATION_STARTED) == (1 if comp_calls else 0)
    per_step: dict[str, list[int]] = {}
    for e in events:
        if e.type is EventType.SAGA_STEP_STARTED:
            per_step.setdefault(e.step_id, []).append(e.attempt)
    assert all(a == list(range(1, len(a) + 1)) for a in per_step.values())
    assert {(e.saga_id, e.instance_id) for e in events} == {(instance.id, coordinator.instance_id)}
