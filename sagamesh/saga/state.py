"""Saga state as stored: the state machine's states, the instance record and step records."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from ..events import SagaError


class SagaState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    STEP_COMPLETED = "step_completed"
    COMPLETED = "completed"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {SagaState.COMPLETED, SagaState.COMPENSATED, SagaState.FAILED, SagaState.CANCELLED,
     SagaState.TIMED_OUT}
)


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"
    SKIPPED = "skipped"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class SagaInstance:
    """One saga run. ``version`` increases on every stored write (optimistic concurrency).

    ``data`` is the current step input (JSON-able once the definition's ``data_type`` dumps it);
    ``lease_owner``/``lease_expires_at`` say which coordinator drives it (crash recovery).
    """

    id: str
    definition_id: str
    state: SagaState = SagaState.PENDING
    current_step: int = 0
    completed_steps: int = 0
    total_steps: int = 0
    data: Any = None
    result: Any = None
    error: SagaError | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    version: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    trace_id: str = ""
    timeout_at: datetime | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES


@dataclass(slots=True)
class StepState:
    """What happened to one step of one saga (its output feeds compensation after a restart)."""

    saga_id: str
    step_id: str
    step_index: int
    status: StepStatus = StepStatus.PENDING
    attempt: int = 0
    input: Any = None
    output: Any = None
    error: SagaError | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    compensation_attempt: int = 0
    compensation_error: SagaError | None = None
