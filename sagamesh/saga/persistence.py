"""Saga writes that carry this coordinator's lease.

Every write goes through the storage's optimistic version check, so a coordinator that lost a
saga to another one gets ``ConcurrencyConflictError`` on its next write and stops driving it.
With an outbox, the transition's events are written in the same atomic write.
"""

from __future__ import annotations

import asyncio

from ._run import Run
from .counters import Counters
from .emitter import EventEmitter
from .leases import LeaseKeeper
from .outbox import OutboxEncoder
from .state import utcnow
from .storage.base import StateStorage


class SagaWriter:
    """Writes a run's saga record, extending or releasing the lease, then publishes its events."""

    def __init__(
        self,
        storage: StateStorage,
        leases: LeaseKeeper,
        events: EventEmitter,
        *,
        instance_id: str,
        outbox: OutboxEncoder | None,
        counters: Counters,
    ) -> None:
        self._storage = storage
        self._events = events
        self._instance_id = instance_id
        self._ttl = leases.ttl
        self._delta = leases.delta
        self._outbox = outbox
        self._c = counters

    async def persist(
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
            instance.lease_owner = self._instance_id
            instance.lease_expires_at = now + self._delta
        run.writing = True
        try:
            if self._outbox is not None:
                await self.save_with_outbox(run)
            else:
                await self._storage.save_saga(instance)
        finally:
            run.writing = False
        run.lease_deadline = at + self._ttl
        if run.pending and self._outbox is None:  # skip the coroutine when idle
            await self._events.flush(run)

    async def save_with_outbox(self, run: Run) -> None:
        assert self._outbox is not None
        pending, run.pending = run.pending, []
        messages = self._outbox(pending) if pending else ()
        self._c.events += len(pending)
        await self._storage.save_saga(run.instance, outbox_messages=messages)  # type: ignore[call-arg]
