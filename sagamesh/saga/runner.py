"""Driving one saga from where it stands to its end: its steps in order, each with its retries
and timeout under the saga deadline, then completion, or compensation when a step fails for good,
the saga times out or is cancelled.

This is the hot path: one coroutine per saga awaits its steps directly, clock reads are shared by
a transition's records and events, and idle publishes skip their coroutine.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ..errors import SerializationError, StepTimeoutError
from ..events import ErrorType, EventType, SagaError
from ._run import Cancelled, OutputNotStorable, Run, StepFailed, TimedOut
from .compensator import OUTCOME_KEY, Compensator
from .counters import Counters
from .emitter import COMPLETED, RUNNING, ZERO, EventEmitter, event_data
from .gate import Gate
from .leases import LeaseKeeper
from .persistence import SagaWriter
from .plan import PlannedStep
from .state import SagaState, StepState, StepStatus, utcnow
from .step import StepContext, may_retry
from .storage.base import StateStorage


@dataclass(slots=True)
class SagaRunner:
    """Advances runs; ``workers`` bounds how many execute a step at the same moment."""

    storage: StateStorage
    leases: LeaseKeeper
    events: EventEmitter
    writer: SagaWriter
    compensator: Compensator
    workers: Gate
    objects: bool  # the storage keeps objects, not JSON
    outbox: bool  # events travel with the saga writes: nothing to publish here
    counters: Counters

    async def advance(self, run: Run) -> None:
        instance = run.instance
        plan = run.plan
        if instance.state is SagaState.COMPENSATING:
            target = SagaState(instance.metadata.get(OUTCOME_KEY, SagaState.COMPENSATED.value))
            return await self.compensator.compensate(run, target, instance.error)
        deadline = run.deadline
        try:
            # the saga deadline bounds step executions and retry waits (see _invoke/_sleep),
            # never a storage write: a write cut off mid-flight would leave the version unknown
            if deadline is not None and asyncio.get_running_loop().time() >= deadline:
                raise TimedOut
            await self._forward(run)
        except TimedOut:
            error = SagaError(
                code="saga_timed_out",
                message=f"saga {plan.id!r} exceeded its timeout of {plan.timeout}s",
                type=ErrorType.TIMEOUT,
            )
            return await self.compensator.compensate(run, SagaState.TIMED_OUT, error)
        except StepFailed as failure:
            return await self.compensator.compensate(run, SagaState.COMPENSATED, failure.error)
        except Cancelled:
            error = SagaError(
                code="saga_cancelled", message=run.cancel_reason or "", type=ErrorType.BUSINESS
            )
            return await self.compensator.compensate(run, SagaState.CANCELLED, error)
        return await self._complete(run)

    async def _forward(self, run: Run) -> None:
        plan = run.plan
        steps = plan.steps
        n = len(steps)
        instance = run.instance
        data = run.data
        index = instance.current_step
        loop = asyncio.get_running_loop()
        while index < n:
            if run.cancel_reason is not None:
                raise Cancelled
            if run.deadline is not None and loop.time() >= run.deadline:
                raise TimedOut
            ps = steps[index]
            output, attempt, stored = await self._execute(run, ps, data)
            run.completed.append((ps, output))
            await self.storage.save_step_state(
                StepState(
                    run.id,
                    ps.id,
                    index,
                    StepStatus.COMPLETED,
                    attempt,
                    output=stored,
                    started_at=run.step_started,
                    completed_at=run.now,
                )
            )
            index += 1
            data = output
            run.data = output
            instance.current_step = instance.completed_steps = index
            instance.data = stored
            if index < n:
                await self.writer.persist(run, stamped=True)

    async def _execute(self, run: Run, ps: PlannedStep, data: Any) -> tuple[Any, int, Any]:
        """Run one step with its retries: (output, attempt that succeeded, output as stored)."""
        policy = ps.policy
        first = run.attempt_base.pop(ps.index, 1) if run.attempt_base else 1
        attempt = first
        loop = asyncio.get_running_loop()
        while True:
            ctx = StepContext(
                run.id, ps.id, attempt, ps.index, run.plan.id, False, run.instance.metadata
            )
            began_at = utcnow()
            if attempt == first:
                run.step_started = began_at
            self.events.emit(
                run,
                EventType.SAGA_STEP_STARTED,
                step_id=ps.id,
                attempt=attempt,
                max_attempts=policy.max_attempts,
                timestamp=began_at,
            )
            if run.pending and not self.outbox:  # skip the coroutine when idle
                await self.events.flush(run)
            workers = self.workers
            if not workers.try_acquire():
                await workers.acquire()
            began = time.perf_counter()
            try:
                if run.lease_deadline - loop.time() < self.leases.floor:
                    await self.leases.hold(run)
                if ps.timeout is None and run.deadline is None:
                    output = await ps.execute(ctx, data)
                else:
                    output = await self._invoke(run, ps, ctx, data)
                stored = output if self.objects else _storable(ps, output)
            except TimedOut:
                workers.release()
                raise
            except Exception as exc:
                workers.release()
                elapsed = timedelta(seconds=time.perf_counter() - began)
                if isinstance(exc, OutputNotStorable):
                    error = SagaError.from_exception(exc, type=ErrorType.DATA)
                    retryable = False  # the same output would come back
                else:
                    error = SagaError.from_exception(exc)
                    retryable = may_retry(ps.step, exc)
                local = attempt - first + 1
                retry = retryable and policy.should_retry(local, exc)
                self.counters.steps += 1
                self.events.emit(
                    run,
                    EventType.SAGA_STEP_FAILED,
                    step_id=ps.id,
                    attempt=attempt,
                    max_attempts=policy.max_attempts,
                    duration=elapsed,
                    error=error,
                )
                await self.storage.save_step_state(
                    StepState(run.id, ps.id, ps.index, StepStatus.FAILED, attempt, error=error)
                )
                if retry:
                    delay = policy.delay(local)
                    await self.events.announce_retry(run, ps, attempt, error, delay)
                    await self._sleep(run, delay)
                    if run.cancel_reason is not None:
                        raise Cancelled from None
                    attempt += 1
                    continue
                if retryable and policy.max_attempts > 1:
                    self.events.announce_exhausted(run, ps, attempt, error)
                await self.events.flush(run)
                raise StepFailed(error) from exc
            except BaseException:
                workers.release()
                raise
            workers.release()
            self.counters.steps += 1
            run.now_at = loop.time()  # the same instant on the loop's clock (leases)
            run.now = utcnow()
            self.events.emit(
                run,
                EventType.SAGA_STEP_COMPLETED,
                timestamp=run.now,
                step_id=ps.id,
                attempt=attempt,
                max_attempts=policy.max_attempts,
                duration=timedelta(seconds=time.perf_counter() - began),
                data=stored if not self.objects else event_data(ps.codec, output),
            )
            return output, attempt, stored

    async def _invoke(self, run: Run, ps: PlannedStep, ctx: StepContext, data: Any) -> Any:
        """Run a step under the earlier of its own timeout and the saga deadline (cancelling it
        when that passes): ``StepTimeoutError`` for the former, ``TimedOut`` for the latter."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadline = run.deadline
        if deadline is not None and now >= deadline:
            raise TimedOut
        if ps.timeout is None:
            assert deadline is not None
            when = deadline
        else:
            when = now + ps.timeout if deadline is None else min(deadline, now + ps.timeout)
        window = asyncio.timeout_at(when)
        try:
            async with window:
                return await ps.execute(ctx, data)
        except TimeoutError:
            if not window.expired():
                raise
            if deadline is not None and when >= deadline:
                raise TimedOut from None
            raise StepTimeoutError(
                f"step {ps.id!r} exceeded its timeout of {ps.timeout}s"
            ) from None

    async def _complete(self, run: Run) -> None:
        instance = run.instance
        instance.state = SagaState.COMPLETED
        instance.result = instance.data
        instance.error = None
        now = utcnow()
        instance.end_time = now
        elapsed = now - instance.start_time if instance.start_time else ZERO
        self.events.emit(
            run,
            EventType.SAGA_COMPLETED,
            previous_state=RUNNING,
            new_state=COMPLETED,
            duration=elapsed,
            data=instance.result if not self.objects else self._dump_result(run),
        )
        await self.writer.persist(run, release=True)
        self.counters.finished(SagaState.COMPLETED, elapsed)

    def _dump_result(self, run: Run) -> Any:
        if run.data is None or not run.plan.steps:
            return run.data
        return event_data(run.plan.steps[-1].codec, run.data)

    async def _sleep(self, run: Run, delay: float) -> None:
        """Wait ``delay`` seconds before a retry; cut short by a cancel, bounded by the saga
        deadline (``TimedOut`` when it passes)."""
        if run.cancel_reason is not None:
            return
        loop = asyncio.get_running_loop()
        deadline = run.deadline
        if deadline is not None:
            delay = min(delay, deadline - loop.time())
        if delay > 0:
            wake: asyncio.Future[None] = loop.create_future()
            run.wake = wake
            handle = loop.call_later(delay, _settle, wake)
            try:
                await wake
            finally:
                handle.cancel()
                run.wake = None
        if run.cancel_reason is None and deadline is not None and loop.time() >= deadline:
            raise TimedOut


def _storable(ps: PlannedStep, output: Any) -> Any:
    try:
        return ps.codec.dump(output)
    except SerializationError as exc:
        message = f"step {ps.id!r} returned data that cannot be stored: {exc}"
        raise OutputNotStorable(message) from exc


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
