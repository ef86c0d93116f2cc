"""The saga orchestrator: definitions, steps, compensation, the coordinator and its storage."""

from __future__ import annotations

from ..errors import BusinessError, RetryableError
from ..retry import (
    ExponentialBackoffRetryPolicy,
    FixedDelayRetryPolicy,
    LinearBackoffRetryPolicy,
    NoRetryPolicy,
    RetryPolicy,
)
from .codec import DataCodec
from .compensation import (
    BestEffortCompensation,
    CompensationStrategy,
    CompensationTarget,
    CustomCompensation,
    ParallelCompensation,
    SequentialCompensation,
)
from .config import ConcurrencyConfig, CoordinatorHealth, CoordinatorMetrics
from .coordinator import OUTCOME_KEY, SagaCoordinator
from .definition import SagaDefinition
from .publisher import InMemoryEventPublisher, SagaEventSink
from .state import TERMINAL_STATES, SagaInstance, SagaState, StepState, StepStatus
from .step import FunctionStep, SagaStep, StepContext, step
from .storage import MemoryStateStorage, SagaFilter, StateStorage

__all__ = [
    "OUTCOME_KEY",
    "TERMINAL_STATES",
    "BestEffortCompensation",
    "BusinessError",
    "CompensationStrategy",
    "CompensationTarget",
    "ConcurrencyConfig",
    "CoordinatorHealth",
    "CoordinatorMetrics",
    "CustomCompensation",
    "DataCodec",
    "ExponentialBackoffRetryPolicy",
    "FixedDelayRetryPolicy",
    "FunctionStep",
    "InMemoryEventPublisher",
    "LinearBackoffRetryPolicy",
    "MemoryStateStorage",
    "NoRetryPolicy",
    "ParallelCompensation",
    "RetryPolicy",
    "RetryableError",
    "SagaCoordinator",
    "SagaDefinition",
    "SagaEventSink",
    "SagaFilter",
    "SagaInstance",
    "SagaState",
    "SagaStep",
    "SequentialCompensation",
    "StateStorage",
    "StepContext",
    "StepState",
    "StepStatus",
    "step",
]
