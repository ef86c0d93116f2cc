"""The consume side: router, handlers, filter chain, priority dispatcher, consumer, DLQ."""

from .consumer import ConsumerConfig, EventConsumer
from .context import HandlerContext
from .dispatcher import DispatcherDrainedError, PriorityDispatcher
from .dlq import DeadLetterQueueHandler, DLQConfig, DLQMetrics, RecoveryResult
from .dlq_store import DeadLetterEntry, DLQStore, MemoryDLQStore
from .filters import (
    AndFilter,
    EventFilter,
    EventTypeFilter,
    MetadataFilter,
    NotFilter,
    OrFilter,
    PredicateFilter,
    SagaIdFilter,
)
from .from_settings import (
    apply_handler_settings,
    consumer_config_from_settings,
    dlq_config_from_settings,
    retry_policy_from_settings,
)
from .handler import EventHandlerConfig, FailureAction, FunctionHandler, SagaEventHandler
from .idempotency import IdempotencyStore, MemoryIdempotencyStore
from .metrics import ConsumerMetrics, HandlerMetrics
from .processor import DLQReason, MessageProcessor, Outcome, OutcomeKind, Prepared
from .redis_dlq_store import RedisDLQStore
from .redis_idempotency import RedisIdempotencyStore
from .router import EventRouter, Route, RoutingStrategy

__all__ = [
    "AndFilter",
    "ConsumerConfig",
    "ConsumerMetrics",
    "DLQConfig",
    "DLQMetrics",
    "DLQReason",
    "DLQStore",
    "DeadLetterEntry",
    "DeadLetterQueueHandler",
    "DispatcherDrainedError",
    "EventConsumer",
    "EventFilter",
    "EventHandlerConfig",
    "EventRouter",
    "EventTypeFilter",
    "FailureAction",
    "FunctionHandler",
    "HandlerContext",
    "HandlerMetrics",
    "IdempotencyStore",
    "MemoryDLQStore",
    "MemoryIdempotencyStore",
    "MessageProcessor",
    "MetadataFilter",
    "NotFilter",
    "OrFilter",
    "Outcome",
    "OutcomeKind",
    "PredicateFilter",
    "Prepared",
    "PriorityDispatcher",
    "RecoveryResult",
    "RedisDLQStore",
    "RedisIdempotencyStore",
    "Route",
    "RoutingStrategy",
    "SagaEventHandler",
    "SagaIdFilter",
    "apply_handler_settings",
    "consumer_config_from_settings",
    "dlq_config_from_settings",
    "retry_policy_from_settings",
]
