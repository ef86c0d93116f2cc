"""Saga definitions: the ordered steps plus the policies that govern a run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .._durations import Duration, seconds
from ..errors import SagaDefinitionError
from ..retry import NoRetryPolicy, RetryPolicy
from .compensation import CompensationStrategy, SequentialCompensation
from .step import SagaStep


@dataclass(slots=True)
class SagaDefinition:
    """What a saga does. ``timeout`` ``None`` means no saga deadline; ``retry_policy`` applies
    to steps without their own; ``data_type`` (pydantic model, dataclass, msgspec Struct, dict or
    ``None``) rehydrates the data after a restart (see :mod:`sagamesh.saga.codec`)."""

    id: str
    name: str = ""
    steps: Sequence[SagaStep] = field(default_factory=list)
    timeout: Duration | None = None
    retry_policy: RetryPolicy = field(default_factory=NoRetryPolicy)
    compensation: CompensationStrategy = field(default_factory=SequentialCompensation)
    data_type: Any = None
    description: str = ""

    def validate(self) -> SagaDefinition:
        """Raise :class:`SagaDefinitionError` naming the first problem; return ``self``."""
        if not self.id:
            raise SagaDefinitionError("a saga definition needs an id")
        if not self.steps:
            raise SagaDefinitionError(f"saga {self.id!r} has no steps")
        _positive(self.timeout, f"saga {self.id!r} timeout")
        compensation_timeout = getattr(self.compensation, "timeout", None)
        _positive(compensation_timeout, f"saga {self.id!r} compensation timeout")
        _attempts(self.retry_policy, f"saga {self.id!r} retry_policy")
        seen: set[str] = set()
        for index, step in enumerate(self.steps):
            step_id = getattr(step, "id", "")
            if not step_id or not isinstance(step_id, str):
                raise SagaDefinitionError(f"saga {self.id!r}: step #{index} has no id")
            if step_id in seen:
                raise SagaDefinitionError(f"saga {self.id!r}: duplicate step id {step_id!r}")
            seen.add(step_id)
            _positive(step.timeout, f"saga {self.id!r} step {step_id!r} timeout")
            if step.retry_policy is not None:
                _attempts(step.retry_policy, f"saga {self.id!r} step {step_id!r} retry_policy")
        return self


def _positive(value: Duration | None, what: str) -> None:
    try:
        number = seconds(value)
    except (TypeError, ValueError) as exc:
        raise SagaDefinitionError(f"{what} must be a number of seconds, got {value!r}") from exc
    if number is not None and not number > 0:
        raise SagaDefinitionError(f"{what} must be positive, got {value!r}")


def _attempts(policy: RetryPolicy, what: str) -> None:
    attempts = getattr(policy, "max_attempts", None)
    if not isinstance(attempts, int) or attempts < 1:
        raise SagaDefinitionError(f"{what} must allow at least one attempt, got {attempts!r}")
