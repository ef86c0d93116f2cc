"""The event model: what a saga emits and what crosses the wire.

Frozen msgspec Structs: they decode straight from bytes several times faster than pydantic
models. Field names follow the seed Go framework's JSON, so its services interoperate.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import msgspec

from .errors import InvalidEventError


class EventType(StrEnum):
    SAGA_STARTED = "saga.started"
    SAGA_STEP_STARTED = "saga.step.started"
    SAGA_STEP_COMPLETED = "saga.step.completed"
    SAGA_STEP_FAILED = "saga.step.failed"
    SAGA_COMPLETED = "saga.completed"
    SAGA_FAILED = "saga.failed"
    SAGA_CANCELLED = "saga.cancelled"
    SAGA_TIMED_OUT = "saga.timed_out"
    COMPENSATION_STARTED = "compensation.started"
    COMPENSATION_STEP_STARTED = "compensation.step.started"
    COMPENSATION_STEP_COMPLETED = "compensation.step.completed"
    COMPENSATION_STEP_FAILED = "compensation.step.failed"
    COMPENSATION_COMPLETED = "compensation.completed"
    COMPENSATION_FAILED = "compensation.failed"
    RETRY_ATTEMPTED = "retry.attempted"
    RETRY_EXHAUSTED = "retry.exhausted"
    STATE_CHANGED = "state.changed"
    DEAD_LETTERED = "dead.lettered"


class ErrorType(StrEnum):
    VALIDATION = "validation"
    TIMEOUT = "timeout"
    NETWORK = "network"
    SERVICE = "service"
    DATA = "data"
    SYSTEM = "system"
    BUSINESS = "business"
    COMPENSATION = "compensation"


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return str(uuid.uuid4())


class SagaError(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An error as recorded in events and saga state (``cause`` chains errors)."""

    code: str
    message: str
    type: ErrorType = ErrorType.SYSTEM
    retryable: bool = False
    timestamp: datetime = msgspec.field(default_factory=_now)
    details: dict[str, Any] = msgspec.field(default_factory=dict)
    cause: SagaError | None = None

    @classmethod
    def from_exception(
        cls, exc: BaseException, *, type: ErrorType | None = None, code: str | None = None
    ) -> SagaError:
        """Describe any exception, keeping the chain of ``__cause__``."""
        from .errors import BusinessError, RetryableError

        if type is None:
            if isinstance(exc, BusinessError):
                type = ErrorType.BUSINESS
            elif isinstance(exc, TimeoutError):
                type = ErrorType.TIMEOUT
            elif isinstance(exc, ConnectionError):
                type = ErrorType.NETWORK
            elif isinstance(exc, ValueError):
                type = ErrorType.VALIDATION
            else:
                type = ErrorType.SYSTEM
        if code is None:
            code = exc.code if isinstance(exc, BusinessError) else exc.__class__.__name__
        cause = exc.__cause__
        return cls(
            code=code,
            message=exc.message if isinstance(exc, BusinessError) else str(exc),
            type=type,
            retryable=isinstance(exc, RetryableError),
            cause=cls.from_exception(cause) if cause is not None else None,
        )


class SagaEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One saga event. ``id`` defaults to a fresh UUID and ``timestamp`` to now (aware UTC)."""

    saga_id: str
    type: EventType
    id: str = msgspec.field(default_factory=_new_id)
    step_id: str = ""
    version: str = "1.0"
    timestamp: datetime = msgspec.field(default_factory=_now)
    correlation_id: str = ""
    data: Any = None
    previous_state: Any = None
    new_state: Any = None
    error: SagaError | None = None
    duration: timedelta = timedelta(0)
    attempt: int = 0
    max_attempts: int = 0
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    source: str = ""
    service: str = ""
    service_version: str = ""
    trace_id: str = ""
    span_id: str = ""
    parent_span_id: str = ""
    instance_id: str = ""

    def validate(self) -> SagaEvent:
        """Raise :class:`InvalidEventError` unless id, saga_id and type are set."""
        missing = [name for name in ("id", "saga_id", "type") if not getattr(self, name)]
        if missing:
            raise InvalidEventError(f"event is missing {', '.join(missing)}")
        return self

    def replace(self, **changes: Any) -> SagaEvent:
        return msgspec.structs.replace(self, **changes)
