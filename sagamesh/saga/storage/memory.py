"""Saga state in process memory: the embedded default and the reference for the protocol.

Saga records are copied on the way in and out (shallow: the instance and its metadata, never the
user data, which the coordinator treats as immutable), so a caller holding an instance cannot
change what is stored and a stale write is caught by the version check exactly as on
Redis/PostgreSQL. Step records are kept as handed over (the coordinator writes a fresh record
each time) and copied on the way out.
Every method completes without awaiting anything, so each call is atomic under asyncio.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from ...errors import ConcurrencyConflictError, SagaNotFoundError
from ...events import SagaError
from .._clone import clone_instance as _clone
from .._clone import clone_step
from ..state import SagaInstance, SagaState, StepState, utcnow
from .base import SagaFilter


class MemoryStateStorage:
    """The :class:`~sagamesh.saga.storage.base.StateStorage` protocol in a dict.

    ``stores_objects`` tells the coordinator that values need no JSON dump (nothing leaves the
    process), which keeps the in-memory hot path free of serialisation.
    """

    stores_objects = True

    def __init__(self) -> None:
        self._sagas: dict[str, SagaInstance] = {}
        self._active: dict[str, None] = {}  # insertion-ordered set of non-terminal ids
        self._steps: dict[str, dict[str, StepState]] = {}

    def __len__(self) -> int:
        return len(self._sagas)

    def _store(self, saga: SagaInstance, expected: int) -> int:
        current = self._sagas.get(saga.id)
        if current is None:
            if expected != 0:
                raise SagaNotFoundError(saga.id)
        elif current.version != expected:
            raise ConcurrencyConflictError(
                f"saga {saga.id}: stored version {current.version}, write based on {expected}"
            )
        stored = _clone(saga)
        stored.version = expected + 1
        self._sagas[saga.id] = stored
        if stored.state.is_terminal:
            self._active.pop(saga.id, None)
        else:
            self._active[saga.id] = None
        return stored.version

    async def save_saga(self, saga: SagaInstance) -> None:
        saga.version = self._store(saga, saga.version)

    async def get_saga(self, saga_id: str) -> SagaInstance | None:
        saga = self._sagas.get(saga_id)
        return None if saga is None else _clone(saga)

    async def update_saga_state(
        self,
        saga_id: str,
        state: SagaState,
        *,
        expected_version: int,
        error: SagaError | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> int:
        current = self._sagas.get(saga_id)
        if current is None:
            raise SagaNotFoundError(saga_id)
        saga = _clone(current)
        saga.state = state
        if error is not None:
            saga.error = error
        if metadata:
            saga.metadata.update(metadata)
        saga.updated_at = utcnow()
        if state.is_terminal and saga.end_time is None:
            saga.end_time = saga.updated_at
        return self._store(saga, expected_version)

    async def delete_saga(self, saga_id: str) -> None:
        self._sagas.pop(saga_id, None)
        self._active.pop(saga_id, None)
        self._steps.pop(saga_id, None)

    async def get_active_sagas(self, filter: SagaFilter | None = None) -> list[SagaInstance]:
        found = [self._sagas[i] for i in self._active]
        if filter is not None:
            found = [s for s in found if filter.matches(s)]
        found.sort(key=lambda s: s.created_at)
        if filter is not None and filter.limit is not None:
            found = found[: filter.limit]
        return [_clone(s) for s in found]

    async def get_timeout_sagas(self, before: datetime) -> list[SagaInstance]:
        found = []
        for saga_id in self._active:
            saga = self._sagas[saga_id]
            if saga.timeout_at is not None and saga.timeout_at <= before:
                found.append(_clone(saga))
        found.sort(key=lambda s: s.timeout_at or s.created_at)
        return found

    async def save_step_state(self, step: StepState) -> None:
        steps = self._steps.get(step.saga_id)
        if steps is None:
            steps = self._steps[step.saga_id] = {}
        steps[step.step_id] = step

    async def get_step_states(self, saga_id: str) -> Sequence[StepState]:
        steps = self._steps.get(saga_id)
        if not steps:
            return []
        return sorted((clone_step(s) for s in steps.values()), key=lambda s: s.step_index)

    async def cleanup_expired_sagas(self, older_than: datetime) -> int:
        expired = [
            saga_id
            for saga_id, saga in self._sagas.items()
            if saga.state.is_terminal and (saga.end_time or saga.updated_at) < older_than
        ]
        for saga_id in expired:
            await self.delete_saga(saga_id)
        return len(expired)

    async def acquire_lease(self, saga_id: str, owner: str, ttl: float) -> SagaInstance | None:
        current = self._sagas.get(saga_id)
        if current is None:
            return None
        now = utcnow()
        if (
            current.lease_owner is not None
            and current.lease_owner != owner
            and current.lease_expires_at is not None
            and current.lease_expires_at > now
        ):
            return None
        saga = _clone(current)
        saga.lease_owner = owner
        saga.lease_expires_at = now + timedelta(seconds=ttl)
        saga.version = self._store(saga, current.version)
        return saga

    async def release_lease(self, saga_id: str, owner: str) -> None:
        current = self._sagas.get(saga_id)
        if current is None or current.lease_owner != owner:
            return
        saga = _clone(current)
        saga.lease_owner = None
        saga.lease_expires_at = None
        self._store(saga, current.version)

    async def close(self) -> None:
        """Nothing to release; the data stays readable."""
