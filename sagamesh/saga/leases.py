"""Keeping this coordinator's leases on the sagas it drives.

A saga's lease is what stops a second coordinator from driving it at the same time: every write
extends it (see :mod:`sagamesh.saga.persistence`), and the keeper renews it for sagas that have
not been written for a third of ``ttl``. A saga whose lease cannot be kept is cancelled before
anyone may adopt it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from ._run import Run
from .counters import Counters
from .storage.base import StateStorage

log = logging.getLogger("sagamesh.saga.coordinator")  # the coordinator's work, under its name

_RENEWAL_PARALLELISM = 64


class LeaseKeeper:
    """Renews, holds and gives up the leases of ``runs`` (the coordinator's own table)."""

    def __init__(
        self,
        storage: StateStorage,
        runs: dict[str, Run],
        *,
        instance_id: str,
        ttl: float,
        counters: Counters,
    ) -> None:
        self._storage = storage
        self._runs = runs
        self._instance_id = instance_id
        self._c = counters
        self.ttl = ttl
        self.delta = timedelta(seconds=ttl)
        self.floor = ttl / 2  # an attempt starting with less lease left renews it first

    async def keep(self) -> None:
        """Renew the leases of running sagas not written for a third of ``ttl``."""
        interval = self.ttl / 3
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            due = [
                run
                for run in self._runs.values()
                if not (run.lost or run.writing or run.renewing is not None)
                # a write within the last interval renewed the lease already
                and run.lease_deadline - now <= self.ttl - interval
            ]
            for start in range(0, len(due), _RENEWAL_PARALLELISM):
                await asyncio.gather(
                    *(self.renew(r) for r in due[start : start + _RENEWAL_PARALLELISM])
                )

    async def hold(self, run: Run) -> None:
        """Renew before an attempt when under half the lease is left: the attempt must not
        outlive the lease, or a coordinator adopting the saga would run the same step at once.
        A renewal that fails leaves the saga (``CancelledError``)."""
        if run.renewing is not None:
            await run.renewing
        else:
            await self.renew(run)
        if run.lost:
            raise asyncio.CancelledError

    async def renew(self, run: Run) -> None:
        loop = asyncio.get_running_loop()
        run.renewing = loop.create_future()
        asked = loop.time()
        try:
            leased = await self._storage.acquire_lease(run.id, self._instance_id, self.ttl)
        except Exception:
            log.warning("saga %s: lease renewal failed", run.id, exc_info=True)
            # the next renewal would come too late: stop before anyone may adopt the saga
            if loop.time() + self.ttl / 3 >= run.lease_deadline - self.ttl / 6:
                self.lose(run, cancel=True)
        else:
            if leased is None or leased.lease_owner != self._instance_id:
                self.lose(run, cancel=True)
            else:
                run.instance.version = leased.version
                run.instance.lease_owner = leased.lease_owner
                run.instance.lease_expires_at = leased.lease_expires_at
                run.lease_deadline = asked + self.ttl
        finally:
            waiter, run.renewing = run.renewing, None
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def lose(self, run: Run, *, cancel: bool) -> None:
        """Stop driving ``run``: another coordinator has (or may soon have) its lease."""
        if run.lost:
            return
        run.lost = True
        self._c.lost += 1
        log.warning("saga %s: lease lost (taken over or not renewable); no longer driving it",
                    run.id)
        if cancel and run.task is not None:
            run.task.cancel()
