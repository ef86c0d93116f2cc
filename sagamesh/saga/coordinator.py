"""The saga coordinator: the public face of the orchestrator and the owner of its sagas.

It admits sagas (at most ``max_concurrent_sagas``), drives each with one owned task that awaits
its steps directly (no task per step), and owns the background tasks (lease keeper, periodic
recovery) it cancels on close. The work is done by collaborators it wires together, one job
each: :class:`SagaRunner` (steps), :class:`Compensator` (undoing them), :class:`SagaWriter`
(lease-fenced writes), :class:`LeaseKeeper`, :class:`EventEmitter`, :class:`Recovery`
(adopting abandoned sagas) and :class:`Presenter` (what callers get back).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from .._durations import Duration, require_seconds
from ..errors import (
    ConcurrencyConflictError,
    ConfigError,
    CoordinatorClosedError,
    CoordinatorSaturatedError,
    SagaDefinitionError,
    SagaNotFoundError,
)
from ..events import EventType
from ._run import Run, id_factory
from .compensator import OUTCOME_KEY, Compensator
from .config import ConcurrencyConfig, CoordinatorHealth, CoordinatorMetrics
from .counters import Counters
from .definition import SagaDefinition
from .emitter import PENDING, RUNNING, EventEmitter, event_data
from .gate import Gate
from .leases import LeaseKeeper
from .outbox import OutboxEncoder
from .persistence import SagaWriter
from .plan import Plan, compile_plan
from .presentation import Presenter
from .publisher import InMemoryEventPublisher, SagaEventSink
from .recovery import Recovery
from .runner import SagaRunner
from .state import SagaInstance, SagaState, StepState, utcnow
from .storage.base import SagaFilter, StateStorage

__all__ = ["OUTCOME_KEY", "OutboxEncoder", "SagaCoordinator"]

log = logging.getLogger(__name__)


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
        if not self.lease_ttl > 0:
            raise ConfigError(f"lease_ttl must be positive, got {lease_ttl!r}", field="lease_ttl")
        self.recovery_interval = (
            None if recovery_interval is None else require_seconds(recovery_interval)
        )
        if outbox is not None and not getattr(storage, "supports_outbox", False):
            raise ConfigError(f"{type(storage).__name__} cannot write an outbox",
                              field="outbox")
        self._outbox = outbox
        self._objects = objects = bool(getattr(storage, "stores_objects", False))
        self._plans: dict[str, Plan] = {}
        self._runs: dict[str, Run] = {}
        self._view = Presenter(self._plans, objects=objects)
        self._slots = Gate(self.concurrency.max_concurrent_sagas)
        self._acquire_timeout = require_seconds(self.concurrency.acquire_timeout)
        self._c = c = Counters()
        self._new_id = id_factory()
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        self._closed = False
        self._closing = False
        self._keeper: asyncio.Task[None] | None = None
        self._recoverer: asyncio.Task[None] | None = None
        self._leases = leases = LeaseKeeper(
            storage, self._runs, instance_id=self.instance_id, ttl=self.lease_ttl, counters=c
        )
        self._events = events = EventEmitter(
            self.publisher, instance_id=self.instance_id, new_id=self._new_id, counters=c,
            outbox=outbox is not None,
        )
        self._writer = writer = SagaWriter(
            storage, leases, events, instance_id=self.instance_id, outbox=outbox, counters=c
        )
        compensator = Compensator(storage, leases, events, writer, objects=objects, counters=c)
        self._runner = SagaRunner(
            storage, leases, events, writer, compensator,
            workers=Gate(self.concurrency.worker_pool_size), objects=objects,
            outbox=outbox is not None, counters=c,
        )
        self._recovery = Recovery(
            storage, events, plans=self._plans, runs=self._runs, spawn=self._spawn,
            closed=lambda: self._closed, started=lambda: self._started,
            instance_id=self.instance_id, lease_ttl=self.lease_ttl, objects=objects, counters=c,
        )
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
                self._leases.keep(), name=f"sagamesh-lease-keeper:{self.instance_id}"
            )
            if self.recovery_interval is not None:
                self._recoverer = loop.create_task(
                    self._recovery.periodically(self.recovery_interval),
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
                lease_expires_at=now + self._leases.delta,
            )
            deadline = None if plan.timeout is None else leased_at + plan.timeout
            run = Run(plan, instance, data, deadline)
            self._events.emit(
                run,
                EventType.SAGA_STARTED,
                previous_state=PENDING,
                new_state=RUNNING,
                data=instance.data if not self._objects else event_data(plan.input_codec, data),
            )
            try:
                if self._outbox is not None:
                    await self._writer.save_with_outbox(run)
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
        await self._events.flush(run)
        return self._view.present(instance, data)

    async def _existing(self, saga_id: str) -> SagaInstance | None:
        run = self._runs.get(saga_id)
        if run is not None:
            return self._view.present(run.instance, run.data)
        stored = await self.storage.get_saga(saga_id)
        return None if stored is None else self._view.present_stored(stored)

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
                    return self._view.present_stored(stored)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)

    async def get_saga_instance(self, saga_id: str) -> SagaInstance:
        stored = await self.storage.get_saga(saga_id)
        if stored is None:
            raise SagaNotFoundError(saga_id)
        return self._view.present_stored(stored)

    async def get_step_states(self, saga_id: str) -> list[StepState]:
        return list(await self.storage.get_step_states(saga_id))

    async def get_active_sagas(self, filter: SagaFilter | None = None) -> list[SagaInstance]:
        return [self._view.present_stored(s) for s in await self.storage.get_active_sagas(filter)]

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
            run = await self._recovery.adopt_to_cancel(plan, saga_id, reason or "cancelled")
            if run is None:
                return
        if run.cancel_reason is None:
            run.cancel_reason = reason or "cancelled"
        if run.wake is not None and not run.wake.done():
            run.wake.set_result(None)

    def get_metrics(self) -> CoordinatorMetrics:
        return self._c.snapshot(len(self._runs))

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
        return await self._recovery.recover()

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
            await self._runner.advance(run)
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
            self._leases.lose(run, cancel=False)
        except Exception:
            log.exception("saga %s: engine error; left in storage for recovery", run.id)
        finally:
            if holds_slot:
                self._slots.release()
            if self._runs.get(run.id) is run:
                del self._runs[run.id]
            if run.waiters:
                final = self._view.present(run.instance, run.data) if finished else None
                for waiter in run.waiters:
                    if not waiter.done():
                        waiter.set_result(final)
