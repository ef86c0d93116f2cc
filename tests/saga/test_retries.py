"""Step retries follow the policy; RetryableError always and BusinessError never retries."""

from __future__ import annotations

import asyncio
import itertools

from sagamesh.errors import BusinessError, RetryableError
from sagamesh.events import EventType
from sagamesh.retry import (
    ExponentialBackoffRetryPolicy,
    FixedDelayRetryPolicy,
    LinearBackoffRetryPolicy,
    NoRetryPolicy,
)
from sagamesh.saga import SagaDefinition, SagaState

from .helpers import Recorder, events_of, make_coordinator


def _fails_until(n: int) -> object:
    def fail(attempt: int) -> BaseException | None:
        return ConnectionError(f"attempt {attempt}") if attempt < n else None

    return fail


async def test_retries_until_success_with_policy_delays() -> None:
    rec = Recorder()
    times: list[float] = []
    loop = asyncio.get_running_loop()

    def fail(attempt: int) -> BaseException | None:
        times.append(loop.time())
        return ConnectionError("flaky") if attempt < 3 else None

    d = SagaDefinition(
        "retry", steps=[rec.step("a", fail=fail)], retry_policy=FixedDelayRetryPolicy(3, 0.05)
    )
    coordinator, publisher = make_coordinator()
    instance = await coordinator.start_saga(d, [])
    final = await coordinator.wait_for_completion(instance.id, timeout=10)
    assert final.state is SagaState.COMPLETED
    assert [c[2] for c in rec.calls] == [1, 2, 3]  # attempts count from 1
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(g >= 0.045 for g in gaps), gaps
    events = events_of(publisher, instance.id)
    retried = [e for e in events if e.type is EventType.RETRY_ATTEMPTED]
    assert [(e.attempt, e.max_attempts) for e in retried] == [(2, 3), (3, 3)]
    assert all(e.error is not None and e.error.code == "ConnectionError" for e in retried)
    assert all(e.duration.total_seconds() == 0.05 for e in retried)  # the delay
    failed = [e for e in events if e.type is EventType.SAGA_STEP_FAILED]
    assert [e.attempt for e in failed] == [1, 2]
    assert coordinator.get_metrics().step_retries == 2
    await coordinator.close()


async def test_exhausted_retries_compensate_and_publish_retry_exhausted() -> None:
    rec = Recorder()
    d = SagaDefinition(
        "exhaust",
        steps=[rec.step("a"), rec.step("b", fail=_fails_until(99))],  # type: ignore[arg-type]
        retry_policy=LinearBackoffRetryPolicy(4, 0.001, 0.001, 0.01),
    )
    coordinator, publisher = make_coordinator()
    instance = await coordinator.start_saga(d, [])
    final = await coordinator.wait_for_completion(instance.id, timeout=10)
    assert final.state is SagaState.COMPENSATED
    assert rec.executed() == ["a", "b", "b", "b", "b"]
    assert rec.compensated() == ["a"]
    events = events_of(publisher, instance.id)
    exhausted = [e for e in events if e.type is EventType.RETRY_EXHAUSTED]
    assert len(exhausted) == 1 and exhausted[0].attempt == 4 and exhausted[0].step_id == "b"
    assert final.error is not None and final.error.code == "ConnectionError"
    await coordinator.close()


async def test_business_error_is_never_retried() -> None:
    rec = Recorder()
    d = SagaDefinition(
        "biz",
        steps=[rec.step("a", fail=lambda _: BusinessError("no_stock", "out of stock"))],
        retry_policy=FixedDelayRetryPolicy(5, 0.001),
    )
    coordinator, publisher = make_coordinator()
    instance = await coordinator.start_saga(d, [])
    final = await coordinator.wait_for_completion(instance.id, timeout=10)
    assert rec.executed() == ["a"]
    assert final.state is SagaState.COMPENSATED
    assert final.error is not None and final.error.code == "no_stock"
    assert final.error.type.value == "business"
    types = [e.type for e in events_of(publisher, instance.id)]
    assert EventType.RETRY_ATTEMPTED not in types and EventType.RETRY_EXHAUSTED not in types
    await coordinator.close()


async def test_retryable_error_is_retried_even_when_step_says_not_retryable() -> None:
    rec = Recorder()
    attempts: list[int] = []

    def fail(attempt: int) -> BaseException | None:
        attempts.append(attempt)
        if attempt == 1:
            return RetryableError(ValueError("transient"))
        if attempt == 2:
            return ValueError("permanent")
        return None

    d = SagaDefinition(
        "flags",
        steps=[rec.step("a", fail=fail, is_retryable=lambda e: False)],
        retry_policy=ExponentialBackoffRetryPolicy(5, 0.001, 0.002),
    )
    coordinator, _ = make_coordinator()
    final = await coordinator.wait_for_completion(
        (await coordinator.start_saga(d, [])).id, timeout=10
    )
    # attempt 1: RetryableError → retried; attempt 2: step says ValueError is final
    assert attempts == [1, 2]
    assert final.state is SagaState.COMPENSATED
    await coordinator.close()


async def test_step_policy_overrides_definition_policy() -> None:
    rec = Recorder()
    d = SagaDefinition(
        "override",
        steps=[rec.step("a", fail=_fails_until(3), retry_policy=FixedDelayRetryPolicy(3, 0.001))],  # type: ignore[arg-type]
        retry_policy=NoRetryPolicy(),
    )
    coordinator, _ = make_coordinator()
    final = await coordinator.wait_for_completion(
        (await coordinator.start_saga(d, [])).id, timeout=10
    )
    assert final.state is SagaState.COMPLETED and rec.executed() == ["a", "a", "a"]
    await coordinator.close()


async def test_failed_compensation_is_retried_then_succeeds() -> None:
    rec = Recorder()
    d = SagaDefinition(
        "comp-retry",
        steps=[
            rec.step("a", comp_fail=_fails_until(2)),  # type: ignore[arg-type]
            rec.step("b", fail=lambda _: BusinessError("x", "y")),
        ],
        retry_policy=FixedDelayRetryPolicy(3, 0.001),
    )
    coordinator, publisher = make_coordinator()
    instance = await coordinator.start_saga(d, [])
    final = await coordinator.wait_for_completion(instance.id, timeout=10)
    assert final.state is SagaState.COMPENSATED
    assert [c[2] for c in rec.calls if c[0] == "comp"] == [1, 2]
    types = [e.type for e in events_of(publisher, instance.id)]
    assert types.count(EventType.COMPENSATION_STEP_FAILED) == 1
    assert types.count(EventType.COMPENSATION_STEP_COMPLETED) == 1
    await coordinator.close()
