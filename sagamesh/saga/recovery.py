"""Adopting sagas nobody drives: at start-up, periodically, and on a cancel of an orphan.

A saga in storage that no live lease covers (its coordinator died, or a storage outage kept it
from being renewed) is leased here and rebuilt from its stored state and step records, then
driven on from the step that was in flight (same idempotency key) or the compensation it was in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..errors import LeaseError
from ..events import EventType
from ._run import Run
from .counters import Counters
from .emitter import EventEmitter
from .plan import Plan
from .state import SagaInstance, SagaState, StepStatus, utcnow
from .storage.base import StateStorage

log = logging.getLogger("sagamesh.saga.coordinator")  # the coordinator's work, under its name

_RECOVERY_PARALLELISM = 32
_UNDO = frozenset({StepStatus.COMPLETED, StepStatus.COMPENSATING, StepStatus.COMPENSATION_FAILED})


class Recovery:
    """Finds, leases and rebuilds abandoned sagas, handing each to ``spawn`` to be driven.

    ``plans`` and ``runs`` are the coordinator's own tables; ``closed`` and ``started`` read its
    state when each decision is made (a close may come in the middle of a scan).
    """

    def __init__(
        self,
        storage: StateStorage,
        events: EventEmitter,
        *,
        plans: dict[str, Plan],
        runs: dict[str, Run],
        spawn: Callable[[Run], None],
        closed: Callable[[], bool],
        started: Callable[[], bool],
        instance_id: str,
        lease_ttl: float,
        objects: bool,
        counters: Counters,
    ) -> None:
        self._storage = storage
        self._events = events
        self._plans = plans
        self._runs = runs
        self._spawn = spawn
        self._closed = closed
        self._started = started
        self._instance_id = instance_id
        self._lease_ttl = lease_ttl
        self._objects = objects
        self._c = counters
        self._lock = asyncio.Lock()
        self._unknown: set[str] = set()
        self._adopting: set[str] = set()
        self._pending_cancels: dict[str, str] = {}

    async def recover(self) -> int:
        """Adopt what nobody holds a live lease on; how many sagas were adopted."""
        if self._closed():
            return 0
        async with self._lock:  # start-up and periodic recovery must not interleave
            return await self._recover()

    async def periodically(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.recover()
            except Exception:
                log.warning("periodic saga recovery failed", exc_info=True)

    async def adopt_to_cancel(self, plan: Plan, saga_id: str, reason: str) -> Run | None:
        """Adopt an unowned saga so it can be cancelled: the run to cancel, or None when there
        is nothing left to do (an adoption under way or just finished takes the cancel along).
        Raises :class:`LeaseError` when another live coordinator drives the saga."""
        if saga_id in self._adopting:  # being recovered right now: cancel once it runs
            self._pending_cancels[saga_id] = reason
            return None
        self._pending_cancels[saga_id] = reason
        leased = await self.adopt(plan, saga_id)
        run = self._runs.get(saga_id)
        if run is None:
            if leased is not None:
                return None  # adopted and already finished
            latest = await self._storage.get_saga(saga_id)
            if latest is None or latest.is_terminal:
                return None
            raise LeaseError(f"saga {saga_id} is driven by {latest.lease_owner}")
        return run

    async def _recover(self) -> int:
        candidates: list[tuple[Plan, str]] = []
        for stored in await self._storage.get_active_sagas():
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
                and (stored.lease_owner != self._instance_id or self._started())
                and stored.lease_expires_at is not None
                and stored.lease_expires_at > utcnow()
            ):
                continue
            candidates.append((plan, stored.id))
        if not candidates:
            return 0
        parallel = asyncio.Semaphore(_RECOVERY_PARALLELISM)

        async def bounded(plan: Plan, saga_id: str) -> bool:
            async with parallel:
                return await self.adopt(plan, saga_id) is not None

        adopted = await asyncio.gather(*(bounded(plan, saga_id) for plan, saga_id in candidates))
        return sum(adopted)

    async def adopt(self, plan: Plan, saga_id: str) -> SagaInstance | None:
        """Lease ``saga_id`` and start driving it; None if someone else holds it (or it ended,
        or this coordinator already drives it). Returns the leased record."""
        if saga_id in self._runs or saga_id in self._adopting or self._closed():
            return None
        self._adopting.add(saga_id)
        try:
            asked = asyncio.get_running_loop().time()
            leased = await self._storage.acquire_lease(saga_id, self._instance_id, self._lease_ttl)
            if leased is None or leased.is_terminal or self._closed() or saga_id in self._runs:
                return None
            run = await self._rebuild(plan, leased)
            run.lease_deadline = asked + self._lease_ttl
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
        records = {s.step_index: s for s in await self._storage.get_step_states(saga.id)}
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
                self._events.emit(run, EventType.COMPENSATION_STEP_COMPLETED,
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
                self._events.emit(run, EventType.SAGA_STEP_COMPLETED, step_id=ps.id,
                                  attempt=record.attempt, data=record.output)
                index += 1
                saga.current_step = saga.completed_steps = index
                saga.data = record.output
        return run

