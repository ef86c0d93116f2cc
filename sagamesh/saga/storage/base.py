"""The storage protocol every saga state store implements (memory, Redis, PostgreSQL).

Writes are optimistic: ``save_saga``/``update_saga_state`` take the instance as read (its
``version``); when the stored version differs they raise ``ConcurrencyConflictError``; on success
they store ``version + 1`` and set it on the instance passed in.
Leases fence coordinators: ``acquire_lease`` succeeds only when the saga is unleased, the lease
has expired, or ``owner`` already holds it; it bumps the version like any write.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from ...events import SagaError
from ..state import SagaInstance, SagaState, StepState


@dataclass(frozen=True, slots=True)
class SagaFilter:
    """Selects sagas in ``get_active_sagas`` (all fields optional, combined with AND)."""

    states: frozenset[SagaState] | None = None
    definition_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    metadata: tuple[tuple[str, Any], ...] = ()
    limit: int | None = None

    def matches(self, saga: SagaInstance) -> bool:
        if self.states is not None and saga.state not in self.states:
            return False
        if self.definition_id is not None and saga.definition_id != self.definition_id:
            return False
        if self.created_after is not None and saga.created_at < self.created_after:
            return False
        if self.created_before is not None and saga.created_at > self.created_before:
            return False
        return all(saga.metadata.get(k) == v for k, v in self.metadata)


@runtime_checkable
class StateStorage(Protocol):
    async def save_saga(self, saga: SagaInstance) -> None:
        """Insert (version 0 → 1) or update with an optimistic version check."""

    async def get_saga(self, saga_id: str) -> SagaInstance | None: ...

    async def update_saga_state(
        self,
        saga_id: str,
        state: SagaState,
        *,
        expected_version: int,
        error: SagaError | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> int:
        """Change only the state (and error/metadata); returns the new version."""

    async def delete_saga(self, saga_id: str) -> None: ...

    async def get_active_sagas(self, filter: SagaFilter | None = None) -> list[SagaInstance]:
        """Non-terminal sagas (further narrowed by ``filter``)."""

    async def get_timeout_sagas(self, before: datetime) -> list[SagaInstance]:
        """Non-terminal sagas whose ``timeout_at`` is at or before ``before``."""

    async def save_step_state(self, step: StepState) -> None: ...

    async def get_step_states(self, saga_id: str) -> Sequence[StepState]:
        """Ordered by ``step_index``."""

    async def cleanup_expired_sagas(self, older_than: datetime) -> int:
        """Delete terminal sagas (and their steps) that ended before ``older_than``."""

    async def acquire_lease(self, saga_id: str, owner: str, ttl: float) -> SagaInstance | None:
        """Take or renew the lease; the leased instance (new version) or None if held by another."""

    async def release_lease(self, saga_id: str, owner: str) -> None: ...

    async def close(self) -> None: ...
