"""Compensating one saga: undoing its completed steps as its definition's strategy decides
(:mod:`sagamesh.saga.compensation` holds the strategies), with each step's retries and the
strategy's timeout, then ending the saga in its terminal state.

Each undo is recorded as a step state, so a saga that crashes mid-compensation resumes without
undoing a step twice; a compensation that keeps failing ends the saga ``FAILED``, never
silently ``COMPENSATED``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import timedelta

from ..errors import StepTimeoutError
from ..events import ErrorType, EventType, SagaError
from ._run import Run
from .compensation import CompensationTarget
from .counters import Counters
from .emitter import ZERO, EventEmitter
from .leases import LeaseKeeper
from .persistence import SagaWriter
from .state import SagaState, StepState, StepStatus, utcnow
from .step import StepContext, may_retry
from .storage.base import StateStorage

OUTCOME_KEY = "sagamesh.outcome"
"""Saga metadata key recording which terminal state a compensation leads to (for recovery)."""

_TERMINAL_EVENT = {
    SagaState.COMPLETED: EventType.SAGA_COMPLETED,
    SagaState.COMPENSATED: EventType.SAGA_FAILED,
    SagaState.FAILED: EventType.SAGA_FAILED,
    SagaState.CANCELLED: EventType.SAGA_CANCELLED,
    SagaState.TIMED_OUT: EventType.SAGA_TIMED_OUT,
}


@dataclass(slots=True)
class Compensator:
    """Takes a run to a terminal state by undoing what it completed."""

    storage: StateStorage
    leases: LeaseKeeper
    events: EventEmitter
    writer: SagaWriter
    objects: bool  # the storage keeps objects, not JSON
    counters: Counters

    async def compensate(
        self, run: Run, target_state: SagaState, reason: SagaError | None
    ) -> None:
        plan = run.plan
        instance = run.instance
        emit = self.events.emit
        targets = [CompensationTarget(ps.id, ps.index, out, reason) for ps, out in run.completed]
        selected = plan.compensation.select(targets)
        failures: list[tuple[CompensationTarget, BaseException]] = []
        began = time.perf_counter()
        if selected:
            if instance.state is not SagaState.COMPENSATING:
                previous = instance.state
                instance.state = SagaState.COMPENSATING
                instance.error = reason
                instance.metadata[OUTCOME_KEY] = target_state.value
                emit(
                    run,
                    EventType.COMPENSATION_STARTED,
                    previous_state=previous.value,
                    new_state=SagaState.COMPENSATING.value,
                    error=reason,
                )
                await self.writer.persist(run)
            chosen = {t.index for t in selected}
            for target in targets:
                if target.index not in chosen:
                    await self.record(run, target, StepStatus.SKIPPED)
            failures = await plan.compensation.run(
                selected, lambda t: self.compensate_one(run, t)
            )
        final_state = target_state
        error = reason
        if failures:
            final_state = SagaState.FAILED
            first_target, first_exc = failures[0]
            error = SagaError(
                code="compensation_failed",
                message=(
                    f"compensation of step {first_target.step_id!r} failed: {first_exc}"
                    + (f" (and {len(failures) - 1} more)" if len(failures) > 1 else "")
                ),
                type=ErrorType.COMPENSATION,
                details={
                    "failed_steps": [t.step_id for t, _ in failures],
                    "errors": [
                        f"{t.step_id}: {type(e).__name__}: {e}" for t, e in failures
                    ],
                    "intended_state": target_state.value,
                },
                cause=reason,
            )
            emit(
                run,
                EventType.COMPENSATION_FAILED,
                previous_state=SagaState.COMPENSATING.value,
                new_state=SagaState.FAILED.value,
                error=error,
                duration=timedelta(seconds=time.perf_counter() - began),
            )
        elif selected:
            emit(
                run,
                EventType.COMPENSATION_COMPLETED,
                previous_state=SagaState.COMPENSATING.value,
                new_state=target_state.value,
                duration=timedelta(seconds=time.perf_counter() - began),
            )
        last_state: SagaState = instance.state
        instance.state = final_state
        instance.error = error
        now = utcnow()
        instance.end_time = now
        elapsed = now - instance.start_time if instance.start_time else ZERO
        emit(
            run,
            _TERMINAL_EVENT[final_state],
            previous_state=last_state.value,
            new_state=final_state.value,
            error=error,
            duration=elapsed,
        )
        await self.writer.persist(run, release=True)
        self.counters.finished(final_state, elapsed)

    async def compensate_one(self, run: Run, target: CompensationTarget) -> None:
        ps = run.plan.steps[target.index]
        policy = ps.policy
        timeout = run.plan.compensation.timeout
        events = self.events
        attempt = 1
        events.emit(run, EventType.COMPENSATION_STEP_STARTED, step_id=ps.id, attempt=1)
        await events.flush(run)
        loop = asyncio.get_running_loop()
        while True:
            ctx = StepContext(run.id, ps.id, attempt, ps.index, run.plan.id, True,
                              run.instance.metadata)
            if run.lease_deadline - loop.time() < self.leases.floor:
                await self.leases.hold(run)
            began = time.perf_counter()
            try:
                if timeout is None:
                    await ps.compensate(ctx, target.output)
                else:
                    window = asyncio.timeout(timeout)
                    try:
                        async with window:
                            await ps.compensate(ctx, target.output)
                    except TimeoutError:
                        if not window.expired():
                            raise
                        raise StepTimeoutError(
                            f"compensation of step {ps.id!r} exceeded {timeout}s"
                        ) from None
            except Exception as exc:
                error = SagaError.from_exception(exc, type=ErrorType.COMPENSATION)
                retryable = may_retry(ps.step, exc)
                retry = retryable and policy.should_retry(attempt, exc)
                events.emit(
                    run,
                    EventType.COMPENSATION_STEP_FAILED,
                    step_id=ps.id,
                    attempt=attempt,
                    max_attempts=policy.max_attempts,
                    duration=timedelta(seconds=time.perf_counter() - began),
                    error=error,
                )
                if retry:
                    delay = policy.delay(attempt)
                    await events.announce_retry(run, ps, attempt, error, delay, compensation=True)
                    await asyncio.sleep(delay)
                    attempt += 1
                    continue
                if retryable and policy.max_attempts > 1:
                    events.announce_exhausted(run, ps, attempt, error, compensation=True)
                await self.record(run, target, StepStatus.COMPENSATION_FAILED, attempt, error)
                await events.flush(run)
                raise
            self.counters.compensations += 1
            events.emit(
                run,
                EventType.COMPENSATION_STEP_COMPLETED,
                step_id=ps.id,
                attempt=attempt,
                max_attempts=policy.max_attempts,
                duration=timedelta(seconds=time.perf_counter() - began),
            )
            await self.record(run, target, StepStatus.COMPENSATED, attempt)
            await events.flush(run)
            return

    async def record(
        self,
        run: Run,
        target: CompensationTarget,
        status: StepStatus,
        attempt: int = 0,
        error: SagaError | None = None,
    ) -> None:
        """Store how undoing ``target`` went (recovery reads it to resume compensating)."""
        ps = run.plan.steps[target.index]
        output = target.output if self.objects else ps.codec.dump(target.output)
        await self.storage.save_step_state(
            StepState(
                run.id,
                ps.id,
                ps.index,
                status,
                output=output,
                completed_at=utcnow(),
                compensation_attempt=attempt,
                compensation_error=error,
            )
        )
