"""The saga coordinator: runs sagas step by step, compensates, persists, publishes, recovers.

Each saga is driven by one owned task that awaits its steps directly (no task per step). Every
saga write goes through the storage's optimistic version check and carries this coordinator's
lease, so a coordinator that lost a saga to another one (after its lease expired) gets
``ConcurrencyConflictError`` on its next write and stops driving that saga. A single owned keeper
task renews the leases of sagas whose last write is older than a third of ``lease_ttl`` and
cancels a saga whose lease it cannot keep.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from .._durations import Duration, require_seconds
from ..errors import (
    BatchPublishError,
    ConcurrencyConflictError,
    CoordinatorClosedError,
    CoordinatorSaturatedError,
    LeaseError,
    SagaDefinitionError,
    SagaNotFoundError,
    SerializationError,
    StepTimeoutError,
)
from ..events import ErrorType, EventType, SagaError, SagaEvent
from ..message import Message
from ._clone import clone_instance
from ._run import Cancelled, Counters, OutputNotStorable, Run, StepFailed, TimedOut, id_factory
from .codec import DataCodec
from .compensation import CompensationTarget
from .config import ConcurrencyConfig, CoordinatorHealth, CoordinatorMetrics
from .definition import SagaDefinition
from .gate import Gate
from .plan import Plan, PlannedStep, compile_plan
from .publisher import InMemoryEventPublisher, SagaEventSink
from .state import SagaInstance, SagaState, StepState, StepStatus, utcnow
from .step import StepContext, may_retry
from .storage.base import SagaFilter, StateStorage

log = logging.getLogger(__name__)

OUTCOME_KEY = "sagamesh.outcome"
"""Saga metadata key recording which terminal state a compensation leads to (for recovery)."""

_ZERO = timedelta(0)
_TERMINAL_EVENT = {
    SagaState.COMPLETED: EventType.SAGA_COMPLETED,
    SagaState.COMPENSATED: EventType.SAGA_FAILED,
    SagaState.FAILED: EventType.SAGA_FAILED,
    SagaState.CANCELLED: EventType.SAGA_CANCELLED,
    SagaState.TIMED_OUT: EventType.SAGA_TIMED_OUT,
}
# plain strings for event fields (an enum's .value is a slow descriptor on the hot path)
_PENDING = str(SagaState.PENDING.value)
_RUNNING = str(SagaState.RUNNING.value)
_COMPLETED = str(SagaState.COMPLETED.value)
_RECOVERY_PARALLELISM = 32
_RENEWAL_PARALLELISM = 64
_UNDO = frozenset({StepStatus.COMPLETED, StepStatus.COMPENSATING, StepStatus.COMPENSATION_FAILED})

OutboxEncoder = Callable[[Sequence[SagaEvent]], Sequence[Message]]


class SagaCoordinator:
    """Runs registered saga definitions against a :class:`StateStorage` and an event publisher.

    ``publisher`` is anything with ``async publish_saga_event(event)`` (default: a new
    :class:`InMemoryEventPublisher`); a ``publish_batch(events)`` method is used when present.
    ``lease_ttl`` bounds how long a crashed coordinator's sagas stay untouched;
    ``recovery_interval`` (``None`` to disable) re-runs :meth:`recover` periodically so a live
    coordinator adopts sagas abandoned by a dead one (or left by a storage outage).
    ``outbox`` (with a storage whose ``supports_outbox`` is true) turns events into messages
    written atomically with each state write instead of publishing them (a relay publishes them
    later). Storage and publisher are not closed by
    :meth:`close`: they belong to the caller.
    """

    def __init__(
        self,
        storage: StateStorage,
        publisher: SagaEventSink | None = None,
        concurrency: ConcurrencyConfig | None = None,
        *,
        instance_id: str | None = None,
        lease_ttl: Duration = 15.0,
        recovery_interval: Duration | None = 30.0,
        outbox: OutboxEncoder | None = None,
        definitions: Sequence[SagaDefinition] = (),
    ) -> None:
        self.storage = storage
        self.publisher: SagaEventSink = publisher if publisher is not None else (
            InMemoryEventPublisher()
        )
        self.concurrency = concurrency or ConcurrencyConfig()
        self.instance_id = instance_id or (
            f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        )
        self.lease_ttl = require_seconds(lease_ttl)
        if self.lease_ttl <= 0:
            raise ValueError("lease_ttl must be positive")
        self._lease_delta = timedelta(seconds=self.lease_ttl)
        self._lease_floor = self.lease_ttl / 2
        self.recovery_interval = (
            None if recovery_interval is None else require_seconds(recovery_interval)
        )
        if outbox is not None and not getattr(storage, "supports_outbox", False):
            raise ValueError(f"{type(storage).__name__} cannot write an outbox")
        self._outbox = outbox
        self._objects = bool(getattr(storage, "stores_objects", False))
        batch = getattr(self.publisher, "publish_batch", None)
        self._publish_batch = batch if callable(batch) else None
        self._plans: dict[str, Plan] = {}
        self._unknown: set[str] = set()
        self._runs: dict[str, Run] = {}
        self._recovering = asyncio.Lock()
        self._adopting: set[str] = set()
        self._pending_cancels: dict[str, str] = {}
        self._recoverer: asyncio.Task[None] | None = None
        self._slots = Gate(self.concurrency.max_concurrent_sagas)
        self._workers = Gate(self.concurrency.worker_pool_size)
        self._acquire_timeout = require_seconds(self.concurrency.acquire_timeout)
        self._c = Counters()
        self._new_id = id_factory()
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        self._closed = False
        self._closing = False
        self._keeper: asyncio.Task[None] | None = None
        for definition in definitions:
            self.register(definition)

    # -- definitions ----------------------------------------------------------------------------

    def register(self, definition: SagaDefinition) -> None:
        """Validate and register (re-registering the same id replaces the definition)."""
        self._plans[definition.id] = compile_plan(definition)

    @property
    def definitions(self) -> dict[str, SagaDefinition]:
        return {k: p.definition for k, p in self._plans.items()}

    def _plan(self, definition: SagaDefinition | str) -> Plan:
        if isinstance(definition, str):
            plan = self._plans.get(definition)
            if plan is None:
                raise SagaDefinitionError(f"no saga definition registered as {definition!r}")
            return plan
        plan = self._plans.get(definition.id)
        if plan is None or plan.definition is not definition:
            self.register(definition)
            plan = self._plans[definition.id]
        return plan

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover sagas left in storage and start the lease keeper (idempotent)."""
        if self._started:
            return
        if self._closed:
            raise CoordinatorClosedError("the coordinator is closed")
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._started:
                return
            loop = asyncio.get_running_loop()
            self._keeper = loop.create_task(
                self._keep(), name=f"sagamesh-lease-keeper:{self.instance_id}"
            )
            if self.recovery_interval is not None:
                self._recoverer = loop.create_task(
                    self._recover_periodically(self.recovery_interval),
                    name=f"sagamesh-recovery:{self.instance_id}",
                )
            await self.recover()
            self._started = True

    async def __aenter__(self) -> SagaCoordinator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Take no new sagas; let running ones finish within ``shutdown_timeout``; cancel the
        rest (their leases are released so another coordinator resumes them at once)."""
        if self._closed and not self._runs and self._keeper is None:
            return
        self._closed = True
        tasks = [r.task for r in self._runs.values() if r.task is not None]
        if tasks:
            timeout = require_seconds(self.concurrency.shutdown_timeout)
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            self._closing = True
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        await self._stop_keeper()

    async def abandon(self) -> None:
        """Stop at once WITHOUT any cleanup, as if the process died: sagas stay in storage with
        their leases until those expire. For crash tests and drills."""
        self._closed = True
        runs = list(self._runs.values())
        for run in runs:
            run.abandoned = True
            if run.task is not None:
                run.task.cancel()
        await asyncio.gather(*(r.task for r in runs if r.task is not None), return_exceptions=True)
        await self._stop_keeper()

    async def _stop_keeper(self) -> None:
        tasks = [t for t in (self._keeper, self._recoverer) if t is not None]
        self._keeper = self._recoverer = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- public API -----------------------------------------------------------------------------

    async def start_saga(
        self,
        definition: SagaDefinition | str,
        data: Any = None,
        saga_id: str | None = None,
        *,
        metadata: dict[str, Any] | None = None,
        trace_id: str = "",
    ) -> SagaInstance:
        """Persist a new saga and start driving it; returns at once (state RUNNING).

        With an explicit ``saga_id`` the call is idempotent: an existing saga of that id is
        returned as it is and nothing is started. Raises ``CoordinatorSaturatedError`` when no
        slot frees up within ``acquire_timeout`` and ``CoordinatorClosedError`` after close.
        """
        if self._closed:
            raise CoordinatorClosedError("the coordinator is closed")
        plan = self._plan(definition)
        if not self._started:
            await self.start()
        if saga_id is not None:
            existing = await self._existing(saga_id)
            if existing is not None:
                return existing
        await self._acquire_slot()
        loop = asyncio.get_running_loop()
        try:
            leased_at = loop.time()  # the lease runs from here, as in storage (not from the write)
            now = utcnow()
            instance = SagaInstance(
                id=saga_id or self._new_id(),
                definition_id=plan.id,
                state=SagaState.RUNNING,
                total_steps=len(plan.steps),
                data=data if self._objects else plan.input_codec.dump(data),
                start_time=now,
                created_at=now,
                updated_at=now,
                metadata=dict(metadata) if metadata else {},
                trace_id=trace_id,
                timeout_at=None if plan.timeout is None else now + timedelta(seconds=plan.timeout),
                lease_owner=self.instance_id,
                lease_expires_at=now + self._lease_delta,
            )
            deadline = None if plan.timeout is None else leased_at + plan.timeout
            run = Run(plan, instance, data, deadline)
            self._emit(
                run,
                EventType.SAGA_STARTED,
                previous_state=_PENDING,
                new_state=_RUNNING,
                data=instance.data if not self._objects else _event_data(plan.input_codec, data),
            )
            try:
                if self._outbox is not None:
                    await self._save_with_outbox(run)
                else:
                    await self.storage.save_saga(instance)
            except ConcurrencyConflictError:
                if saga_id is None:
                    raise
                existing = await self._existing(saga_id)  # a concurrent start of the same id
                if existing is None:
                    raise
                self._slots.release()
                return existing
        except BaseException:
            self._slots.release()
            raise
        run.lease_deadline = leased_at + self.lease_ttl
        self._c.total += 1
        self._spawn(run)
        await self._flush(run)
        return self._present(plan, instance, data)

    async def _existing(self, saga_id: str) -> SagaInstance | None:
        run = self._runs.get(saga_id)
        if run is not None:
            return self._present(run.plan, run.instance, run.data)
        stored = await self.storage.get_saga(saga_id)
        return None if stored is None else self._present_stored(stored)

    async def wait_for_completion(
        self, saga_id: str, timeout: Duration | None = None  # noqa: ASYNC109 (spec'd API)
    ) -> SagaInstance:
        """The saga once terminal; ``TimeoutError`` if it is not within ``timeout`` seconds."""
        limit = None if timeout is None else require_seconds(timeout)
        async with asyncio.timeout(limit):
            run = self._runs.get(saga_id)
            if run is not None:
                future: asyncio.Future[SagaInstance | None] = (
                    asyncio.get_running_loop().create_future()
                )
                run.waiters.append(future)
                result = await future
                if result is not None:
                    return result
            delay = 0.01
            while True:  # driven elsewhere (or the lease was lost): watch storage
                stored = await self.storage.get_saga(saga_id)
                if stored is None:
                    raise SagaNotFoundError(saga_id)
                if stored.is_terminal:
                    return self._present_stored(stored)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)

    async def get_saga_instance(self, saga_id: str) -> SagaInstance:
        stored = await self.storage.get_saga(saga_id)
        if stored is None:
            raise SagaNotFoundError(saga_id)
        return self._present_stored(stored)

    async def get_step_states(self, saga_id: str) -> list[StepState]:
        return list(await self.storage.get_step_states(saga_id))

    async def get_active_sagas(self, filter: SagaFilter | None = None) -> list[SagaInstance]:
        return [self._present_stored(s) for s in await self.storage.get_active_sagas(filter)]

    async def cancel_saga(self, saga_id: str, reason: str = "") -> None:
        """Stop after the running step (or during a retry wait), compensate, end CANCELLED.

        A terminal saga is left as it is. A saga driven by another live coordinator raises
        :class:`LeaseError`; an unowned one (its coordinator died) is adopted and cancelled.
        """
        run = self._runs.get(saga_id)
        if run is None:
            stored = await self.storage.get_saga(saga_id)
            if stored is None:
                raise SagaNotFoundError(saga_id)
            if stored.is_terminal:
                return
            plan = self._plans.get(stored.definition_id)
            if plan is None:
                raise SagaDefinitionError(
                    f"saga {saga_id} uses unregistered definition {stored.definition_id!r}"
                )
            if self._closed:
                raise CoordinatorClosedError("the coordinator is closed")
            if saga_id in self._adopting:  # being recovered right now: cancel once it runs
                self._pending_cancels[saga_id] = reason or "cancelled"
                return
            self._pending_cancels[saga_id] = reason or "cancelled"
            leased = await self._adopt(plan, saga_id)
            run = self._runs.get(saga_id)
            if run is None:
                if leased is not None:
                    return  # adopted and already finished
                latest = await self.storage.get_saga(saga_id)
                if latest is None or latest.is_terminal:
                    return
                raise LeaseError(f"saga {saga_id} is driven by {latest.lease_owner}")
        if run.cancel_reason is None:
            run.cancel_reason = reason or "cancelled"
        if run.wake is not None and not run.wake.done():
            run.wake.set_result(None)

    def get_metrics(self) -> CoordinatorMetrics:
        c = self._c
        return CoordinatorMetrics(
            total_sagas=c.total,
            active_sagas=len(self._runs),
            completed_sagas=c.completed,
            failed_sagas=c.failed,
            compensated_sagas=c.compensated,
            cancelled_sagas=c.cancelled,
            timed_out_sagas=c.timed_out,
            average_saga_duration=c.duration_sum / c.ended if c.ended else 0.0,
            steps_executed=c.steps,
            step_retries=c.retries,
            compensations_run=c.compensations,
            recovered_sagas=c.recovered,
            lost_leases=c.lost,
            events_published=c.events,
            event_publish_failures=c.publish_failures,
        )

    async def health_check(self, timeout: float = 5.0) -> CoordinatorHealth:  # noqa: ASYNC109
        """Healthy when open and the storage answers a read within ``timeout``."""
        if self._closed:
            return CoordinatorHealth(False, "closed", len(self._runs))
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                await self.storage.get_saga(f"__sagamesh_health__{self.instance_id}")
        except Exception as exc:
            return CoordinatorHealth(False, f"storage: {exc!r}", len(self._runs))
        return CoordinatorHealth(True, "ok", len(self._runs), time.perf_counter() - started)

    # -- recovery -------------------------------------------------------------------------------

    async def recover(self) -> int:
        """Adopt every non-terminal saga in storage that nobody holds a live lease on.

        The step that was in flight re-runs with the same idempotency key; a compensating saga
        continues compensating; a saga past its deadline is compensated and ends TIMED_OUT.
        Sagas of unregistered definitions are left alone (register, then recover again).
        Returns how many sagas were adopted.
        """
        if self._closed:
            return 0
        async with self._recovering:  # start-up and periodic recovery must not interleave
            return await self._recover()

    async def _recover(self) -> int:
        candidates: list[tuple[Plan, str]] = []
        for stored in await self.storage.get_active_sagas():
            if stored.id in self._runs or stored.id in self._adopting:
                continue
            plan = self._plans.get(stored.definition_id)
            if plan is None:
                if stored.definition_id not in self._unknown:
                    self._unknown.add(stored.definition_id)
                    log.warning(
                        "sagas of definition %r found in storage but it is not registered here; "
                        "they are left to other coordinators",
                        stored.definition_id,
                    )
                continue
            if (
                stored.lease_owner is not None
                # our own live lease: adopt it only at start-up (a restart under the same id);
                # later it is a saga start_saga is storing right now, or one we drive
                and (stored.lease_owner != self.instance_id or self._started)
                and stored.lease_expires_at is not None
                and stored.lease_expires_at > utcnow()
            ):
                continue
            candidates.append((plan, stored.id))
        if not candidates:
            return 0
        parallel = asyncio.Semaphore(_RECOVERY_PARALLELISM)

        async def adopt(plan: Plan, saga_id: str) -> bool:
            async with parallel:
                return await self._adopt(plan, saga_id) is not None

        adopted = await asyncio.gather(*(adopt(plan, saga_id) for plan, saga_id in candidates))
        return sum(adopted)

    async def _adopt(self, plan: Plan, saga_id: str) -> SagaInstance | None:
        """Lease ``saga_id`` and start driving it; None if someone else holds it (or it ended,
        or this coordinator already drives it). Returns the leased record."""
        if saga_id in self._runs or saga_id in self._adopting or self._closed:
            return None
        self._adopting.add(saga_id)
        try:
            asked = asyncio.get_running_loop().time()
            leased = await self.storage.acquire_lease(saga_id, self.instance_id, self.lease_ttl)
            if leased is None or leased.is_terminal or self._closed or saga_id in self._runs:
                return None
            run = await self._rebuild(plan, leased)
            run.lease_deadline = asked + self.lease_ttl
            run.needs_slot = True
            reason = self._pending_cancels.pop(saga_id, None)
            if reason is not None:
                run.cancel_reason = reason
            self._c.total += 1
            self._c.recovered += 1
            self._spawn(run)
            return leased
        finally:
            self._adopting.discard(saga_id)
            self._pending_cancels.pop(saga_id, None)

    async def _rebuild(self, plan: Plan, saga: SagaInstance) -> Run:
        """A run continuing ``saga`` from its stored state and step records."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        if saga.timeout_at is not None:
            deadline = loop.time() + (saga.timeout_at - utcnow()).total_seconds()
        codec = plan.data_codec(saga.current_step)
        data = saga.data if self._objects else codec.load(saga.data)
        run = Run(plan, saga, data, deadline)
        records = {s.step_index: s for s in await self.storage.get_step_states(saga.id)}
        n = len(plan.steps)
        compensating = saga.state is SagaState.COMPENSATING
        limit = n if compensating else min(saga.current_step, n)
        for index in range(limit):
            record = records.get(index)
            if record is None:
                continue
            if record.status in _UNDO or (
                not compensating and record.status is StepStatus.COMPLETED
            ):
                ps = plan.steps[index]
                output = record.output if self._objects else ps.codec.load(record.output)
                run.completed.append((ps, output))
            elif compensating and record.status is StepStatus.COMPENSATED:
                # undone after the last saga write: its event went down with the crash
                self._emit(run, EventType.COMPENSATION_STEP_COMPLETED,
                           step_id=record.step_id, attempt=record.compensation_attempt)
        if not compensating:
            # the in-flight step may have completed just before the crash: keep its output
            index = saga.current_step
            while index < n:
                record = records.get(index)
                if record is None or record.status is not StepStatus.COMPLETED:
                    if record is not None and record.status is StepStatus.FAILED:
                        run.attempt_base[index] = record.attempt + 1
                    break
                ps = plan.steps[index]
                output = record.output if self._objects else ps.codec.load(record.output)
                run.completed.append((ps, output))
                run.data = output
                # completed after the last saga write: its event went down with the crash
                self._emit(run, EventType.SAGA_STEP_COMPLETED, step_id=ps.id,
                           attempt=record.attempt, data=record.output)
                index += 1
                saga.current_step = saga.completed_steps = index
                saga.data = record.output
        return run

    # -- driving --------------------------------------------------------------------------------

    def _spawn(self, run: Run) -> None:
        self._runs[run.id] = run
        run.task = asyncio.get_running_loop().create_task(self._drive(run), name=f"saga:{run.id}")

    async def _acquire_slot(self) -> None:
        if self._slots.try_acquire():
            return
        try:
            async with asyncio.timeout(self._acquire_timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise CoordinatorSaturatedError(
                f"all {self.concurrency.max_concurrent_sagas} saga slots stayed busy for "
                f"{self._acquire_timeout}s"
            ) from None

    async def _drive(self, run: Run) -> None:
        holds_slot = not run.needs_slot
        finished = False
        try:
            if run.needs_slot:
                await self._slots.acquire()
                holds_slot = True
            await self._advance(run)
            finished = True
        except asyncio.CancelledError:
            if run.lost:
                return
            if self._closing and not run.abandoned:
                try:
                    await self.storage.release_lease(run.id, self.instance_id)
                except Exception:
                    log.warning("saga %s: could not release its lease", run.id, exc_info=True)
            raise
        except ConcurrencyConflictError:
            self._lose(run, cancel=False)
        except Exception:
            log.exception("saga %s: engine error; left in storage for recovery", run.id)
        finally:
            if holds_slot:
                self._slots.release()
            if self._runs.get(run.id) is run:
                del self._runs[run.id]
            if run.waiters:
                final = self._present(run.plan, run.instance, run.data) if finished else None
                for waiter in run.waiters:
                    if not waiter.done():
                        waiter.set_result(final)

    def _lose(self, run: Run, *, cancel: bool) -> None:
        if run.lost:
            return
        run.lost = True
        self._c.lost += 1
        log.warning("saga %s: lease lost (taken over or not renewable); no longer driving it",
                    run.id)
        if cancel and run.task is not None:
            run.task.cancel()

    async def _advance(self, run: Run) -> None:
        instance = run.instance
        plan = run.plan
        if instance.state is SagaState.COMPENSATING:
            target = SagaState(instance.metadata.get(OUTCOME_KEY, SagaState.COMPENSATED.value))
            return await self._compensate(run, target, instance.error)
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
            return await self._compensate(run, SagaState.TIMED_OUT, error)
        except StepFailed as failure:
            return await self._compensate(run, SagaState.COMPENSATED, failure.error)
        except Cancelled:
            error = SagaError(
                code="saga_cancelled", message=run.cancel_reason or "", type=ErrorType.BUSINESS
            )
            return await self._compensate(run, SagaState.CANCELLED, error)
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
                await self._persist(run, stamped=True)

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
            self._emit(
                run,
                EventType.SAGA_STEP_STARTED,
                step_id=ps.id,
                attempt=attempt,
                max_attempts=policy.max_attempts,
                timestamp=began_at,
            )
            if run.pending and self._outbox is None:  # skip the coroutine when idle
                await self._flush(run)
            workers = self._workers
            if not workers.try_acquire():
                await workers.acquire()
            began = time.perf_counter()
            try:
                if run.lease_deadline - loop.time() < self._lease_floor:
                    await self._hold(run)
                if ps.timeout is None and run.deadline is None:
                    output = await ps.execute(ctx, data)
                else:
                    output = await self._invoke(run, ps, ctx, data)
                stored = output if self._objects else _storable(ps, output)
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
                self._c.steps += 1
                self._emit(
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
                    await self._announce_retry(run, ps, attempt, error, delay)
                    await self._sleep(run, delay)
                    if run.cancel_reason is not None:
                        raise Cancelled from None
                    attempt += 1
                    continue
                if retryable and policy.max_attempts > 1:
                    self._announce_exhausted(run, ps, attempt, error)
                await self._flush(run)
                raise StepFailed(error) from exc
            except BaseException:
                workers.release()
                raise
            workers.release()
            self._c.steps += 1
            run.now_at = loop.time()  # the same instant on the loop's clock (leases)
            run.now = utcnow()
            self._emit(
                run,
                EventType.SAGA_STEP_COMPLETED,
                timestamp=run.now,
                step_id=ps.id,
                attempt=attempt,
                max_attempts=policy.max_attempts,
                duration=timedelta(seconds=time.perf_counter() - began),
                data=stored if not self._objects else _event_data(ps.codec, output),
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
        elapsed = now - instance.start_time if instance.start_time else _ZERO
        self._emit(
            run,
            EventType.SAGA_COMPLETED,
            previous_state=_RUNNING,
            new_state=_COMPLETED,
            duration=elapsed,
            data=instance.result if not self._objects else self._dump_result(run),
        )
        await self._persist(run, release=True)
        self._finished(SagaState.COMPLETED, elapsed)

    def _dump_result(self, run: Run) -> Any:
        if run.data is None or not run.plan.steps:
            return run.data
        return _event_data(run.plan.steps[-1].codec, run.data)

    async def _compensate(
        self, run: Run, target_state: SagaState, reason: SagaError | None
    ) -> None:
        plan = run.plan
        instance = run.instance
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
                self._emit(
                    run,
                    EventType.COMPENSATION_STARTED,
                    previous_state=previous.value,
                    new_state=SagaState.COMPENSATING.value,
                    error=reason,
                )
                await self._persist(run)
            chosen = {t.index for t in selected}
            for target in targets:
                if target.index not in chosen:
                    await self._record_compensation(run, target, StepStatus.SKIPPED)
            failures = await plan.compensation.run(
                selected, lambda t: self._compensate_one(run, t)
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
            self._emit(
                run,
                EventType.COMPENSATION_FAILED,
                previous_state=SagaState.COMPENSATING.value,
                new_state=SagaState.FAILED.value,
                error=error,
                duration=timedelta(seconds=time.perf_counter() - began),
            )
        elif selected:
            self._emit(
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
        elapsed = now - instance.start_time if instance.start_time else _ZERO
        self._emit(
            run,
            _TERMINAL_EVENT[final_state],
            previous_state=last_state.value,
            new_state=final_state.value,
            error=error,
            duration=elapsed,
        )
        await self._persist(run, release=True)
        self._finished(final_state, elapsed)

    async def _compensate_one(self, run: Run, target: CompensationTarget) -> None:
        ps = run.plan.steps[target.index]
        policy = ps.policy
        timeout = run.plan.compensation.timeout
        attempt = 1
        self._emit(run, EventType.COMPENSATION_STEP_STARTED, step_id=ps.id, attempt=1)
        await self._flush(run)
        loop = asyncio.get_running_loop()
        while True:
            ctx = StepContext(run.id, ps.id, attempt, ps.index, run.plan.id, True,
                              run.instance.metadata)
            if run.lease_deadline - loop.time() < self._lease_floor:
                await self._hold(run)
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
                self._emit(
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
                    await self._announce_retry(run, ps, attempt, error, delay, compensation=True)
                    await asyncio.sleep(delay)
                    attempt += 1
                    continue
                if retryable and policy.max_attempts > 1:
                    self._announce_exhausted(run, ps, attempt, error, compensation=True)
                await self._record_compensation(
                    run, target, StepStatus.COMPENSATION_FAILED, attempt, error
                )
                await self._flush(run)
                raise
            self._c.compensations += 1
            self._emit(
                run,
                EventType.COMPENSATION_STEP_COMPLETED,
                step_id=ps.id,
                attempt=attempt,
                max_attempts=policy.max_attempts,
                duration=timedelta(seconds=time.perf_counter() - began),
            )
            await self._record_compensation(run, target, StepStatus.COMPENSATED, attempt)
            await self._flush(run)
            return

    async def _record_compensation(
        self,
        run: Run,
        target: CompensationTarget,
        status: StepStatus,
        attempt: int = 0,
        error: SagaError | None = None,
    ) -> None:
        ps = run.plan.steps[target.index]
        output = target.output if self._objects else ps.codec.dump(target.output)
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

    def _finished(self, state: SagaState, elapsed: timedelta) -> None:
        c = self._c
        c.ended += 1
        c.duration_sum += elapsed.total_seconds()
        if state is SagaState.COMPLETED:
            c.completed += 1
        elif state is SagaState.COMPENSATED:
            c.compensated += 1
        elif state is SagaState.FAILED:
            c.failed += 1
        elif state is SagaState.CANCELLED:
            c.cancelled += 1
        elif state is SagaState.TIMED_OUT:
            c.timed_out += 1

    # -- persistence and leases -----------------------------------------------------------------

    async def _persist(
        self, run: Run, *, release: bool = False, stamped: bool = False
    ) -> None:
        """Write the saga (version-fenced), extending or releasing this coordinator's lease.

        ``stamped``: the write takes the transition's clock reads (``run.now``, read at loop
        time ``run.now_at``) instead of its own. Either way the lease runs from that instant on
        both clocks, never from after the write returns."""
        if run.renewing is not None:
            await run.renewing
        if run.lost:
            raise asyncio.CancelledError
        instance = run.instance
        if stamped:
            now, at = run.now, run.now_at
        else:
            at = asyncio.get_running_loop().time()
            now = utcnow()
        instance.updated_at = now
        if release:
            instance.lease_owner = None
            instance.lease_expires_at = None
        else:
            instance.lease_owner = self.instance_id
            instance.lease_expires_at = now + self._lease_delta
        run.writing = True
        try:
            if self._outbox is not None:
                await self._save_with_outbox(run)
            else:
                await self.storage.save_saga(instance)
        finally:
            run.writing = False
        run.lease_deadline = at + self.lease_ttl
        if run.pending and self._outbox is None:  # skip the coroutine when idle
            await self._flush(run)

    async def _save_with_outbox(self, run: Run) -> None:
        assert self._outbox is not None
        pending, run.pending = run.pending, []
        messages = self._outbox(pending) if pending else ()
        self._c.events += len(pending)
        await self.storage.save_saga(run.instance, outbox_messages=messages)  # type: ignore[call-arg]

    async def _keep(self) -> None:
        """Renew the leases of running sagas not written for a third of ``lease_ttl``."""
        interval = self.lease_ttl / 3
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            due = [
                run
                for run in self._runs.values()
                if not (run.lost or run.writing or run.renewing is not None)
                # a write within the last interval renewed the lease already
                and run.lease_deadline - now <= self.lease_ttl - interval
            ]
            for start in range(0, len(due), _RENEWAL_PARALLELISM):
                await asyncio.gather(
                    *(self._renew(r) for r in due[start : start + _RENEWAL_PARALLELISM])
                )

    async def _recover_periodically(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.recover()
            except Exception:
                log.warning("periodic saga recovery failed", exc_info=True)

    async def _hold(self, run: Run) -> None:
        """Renew before an attempt when under half the lease is left: the attempt must not
        outlive the lease, or a coordinator adopting the saga would run the same step at once.
        A renewal that fails leaves the saga (``CancelledError``)."""
        if run.renewing is not None:
            await run.renewing
        else:
            await self._renew(run)
        if run.lost:
            raise asyncio.CancelledError

    async def _renew(self, run: Run) -> None:
        loop = asyncio.get_running_loop()
        run.renewing = loop.create_future()
        asked = loop.time()
        try:
            leased = await self.storage.acquire_lease(run.id, self.instance_id, self.lease_ttl)
        except Exception:
            log.warning("saga %s: lease renewal failed", run.id, exc_info=True)
            # the next renewal would come too late: stop before anyone may adopt the saga
            if loop.time() + self.lease_ttl / 3 >= run.lease_deadline - self.lease_ttl / 6:
                self._lose(run, cancel=True)
        else:
            if leased is None or leased.lease_owner != self.instance_id:
                self._lose(run, cancel=True)
            else:
                run.instance.version = leased.version
                run.instance.lease_owner = leased.lease_owner
                run.instance.lease_expires_at = leased.lease_expires_at
                run.lease_deadline = asked + self.lease_ttl
        finally:
            waiter, run.renewing = run.renewing, None
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    # -- events ---------------------------------------------------------------------------------

    def _emit(
        self,
        run: Run,
        type: EventType,
        *,
        step_id: str = "",
        attempt: int = 0,
        max_attempts: int = 0,
        duration: timedelta = _ZERO,
        error: SagaError | None = None,
        previous_state: Any = None,
        new_state: Any = None,
        data: Any = None,
        metadata: dict[str, Any] | None = None,
        timestamp: datetime | None = None,
    ) -> None:
        run.pending.append(
            SagaEvent(
                saga_id=run.id,
                type=type,
                id=self._new_id(),
                timestamp=utcnow() if timestamp is None else timestamp,
                step_id=step_id,
                correlation_id=run.id,
                data=data,
                previous_state=previous_state,
                new_state=new_state,
                error=error,
                duration=duration,
                attempt=attempt,
                max_attempts=max_attempts,
                metadata=run.meta if metadata is None else metadata,
                source="sagamesh.saga",
                trace_id=run.instance.trace_id,
                instance_id=self.instance_id,
            )
        )

    async def _announce_retry(self, run: Run, ps: PlannedStep, attempt: int, error: SagaError,
                              delay: float, *, compensation: bool = False) -> None:
        """``retry.attempted`` for the attempt after ``attempt``, published before the wait."""
        self._c.retries += 1
        self._emit(run, EventType.RETRY_ATTEMPTED, step_id=ps.id, attempt=attempt + 1,
                   max_attempts=ps.policy.max_attempts, error=error,
                   duration=timedelta(seconds=delay), **self._phase(run, compensation))
        await self._flush(run)

    def _announce_exhausted(self, run: Run, ps: PlannedStep, attempt: int, error: SagaError,
                            *, compensation: bool = False) -> None:
        self._emit(run, EventType.RETRY_EXHAUSTED, step_id=ps.id, attempt=attempt,
                   max_attempts=ps.policy.max_attempts, error=error,
                   **self._phase(run, compensation))

    @staticmethod
    def _phase(run: Run, compensation: bool) -> dict[str, Any]:
        # Compensation retries say so, so a reader of the stream can tell them from step retries.
        if not compensation:
            return {}
        return {"metadata": {"definition_id": run.plan.id, "phase": "compensation"}}

    async def _flush(self, run: Run) -> None:
        """Publish what the last transition emitted; failures are logged and counted only
        (events describe state that is already stored; they never fail a saga)."""
        if not run.pending or self._outbox is not None:
            return
        pending, run.pending = run.pending, []
        failed = 0
        if len(pending) > 1 and self._publish_batch is not None:
            try:
                await self._publish_batch(pending)
            except BatchPublishError as exc:
                failed = len(exc.failures) or len(pending)
            except Exception:
                failed = len(pending)
        else:
            publish = self.publisher.publish_saga_event
            for event in pending:
                try:
                    await publish(event)
                except Exception:
                    failed += 1
        self._c.events += len(pending) - failed
        if failed:
            self._c.publish_failures += failed
            log.warning("saga %s: %d of %d event(s) not published", run.id, failed, len(pending))

    # -- presentation ---------------------------------------------------------------------------

    def _present(self, plan: Plan, instance: SagaInstance, data: Any) -> SagaInstance:
        out = clone_instance(instance)
        if not self._objects:
            out.data = data
            if instance.state is SagaState.COMPLETED:
                out.result = data
        return out

    def _present_stored(self, stored: SagaInstance) -> SagaInstance:
        if self._objects:
            return stored
        plan = self._plans.get(stored.definition_id)
        if plan is None:
            return stored
        stored.data = plan.data_codec(stored.current_step).load(stored.data)
        if stored.result is not None and plan.steps:
            stored.result = plan.steps[-1].codec.load(stored.result)
        return stored


def _storable(ps: PlannedStep, output: Any) -> Any:
    try:
        return ps.codec.dump(output)
    except SerializationError as exc:
        message = f"step {ps.id!r} returned data that cannot be stored: {exc}"
        raise OutputNotStorable(message) from exc


def _event_data(codec: DataCodec, value: Any) -> Any:
    """JSON-able data for an event; None when the value has no JSON form (events describe the
    transition; the in-memory store keeps the object itself)."""
    if value is None:
        return None
    try:
        return codec.dump(value)
    except SerializationError:
        return None


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
