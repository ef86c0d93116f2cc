"""A registered definition compiled for the hot path: timeouts in seconds, policies and codecs
resolved once instead of on every step."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .._durations import seconds
from ..retry import RetryPolicy
from .codec import DataCodec
from .compensation import CompensationStrategy
from .definition import SagaDefinition
from .step import FunctionStep, SagaStep, StepContext


@dataclass(slots=True)
class PlannedStep:
    step: SagaStep
    id: str
    index: int
    timeout: float | None
    policy: RetryPolicy
    codec: DataCodec  # of this step's output
    execute: Callable[[StepContext, Any], Awaitable[Any]]
    compensate: Callable[[StepContext, Any], Awaitable[None]]


@dataclass(slots=True)
class Plan:
    definition: SagaDefinition
    id: str
    steps: tuple[PlannedStep, ...]
    timeout: float | None
    compensation: CompensationStrategy
    input_codec: DataCodec

    def data_codec(self, current_step: int) -> DataCodec:
        """The codec of the input of step ``current_step`` (the previous step's output)."""
        if current_step <= 0:
            return self.input_codec
        return self.steps[min(current_step, len(self.steps)) - 1].codec


def _direct(step: SagaStep, name: str) -> Any:
    """The callable to await: a function step's own coroutine function (one frame less per
    call), else the bound method."""
    if isinstance(step, FunctionStep) and getattr(type(step), name) is getattr(FunctionStep, name):
        fn = step._execute if name == "execute" else step._compensate
        if fn is not None:
            return fn
    return getattr(step, name)


def compile_plan(definition: SagaDefinition) -> Plan:
    definition.validate()
    data_codec = DataCodec(definition.data_type)
    steps = []
    for index, step in enumerate(definition.steps):
        output_type = getattr(step, "output_type", None)
        steps.append(
            PlannedStep(
                step=step,
                id=step.id,
                index=index,
                timeout=seconds(step.timeout),
                policy=step.retry_policy or definition.retry_policy,
                codec=data_codec if output_type is None else DataCodec(output_type),
                execute=_direct(step, "execute"),
                compensate=_direct(step, "compensate"),
            )
        )
    return Plan(
        definition=definition,
        id=definition.id,
        steps=tuple(steps),
        timeout=seconds(definition.timeout),
        compensation=definition.compensation,
        input_codec=data_codec,
    )
