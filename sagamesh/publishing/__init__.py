"""The publish side: ``SagaEventPublisher`` and its pipeline (serialize → reliability → batch →
transaction), configuration, metrics and the transactional outbox contract."""

from .config import DLQRetryPolicy, PublisherConfig, ReliabilityConfig, TopicStrategy
from .metrics import PublisherMetrics, ReliabilityMetrics
from .outbox import MemoryOutbox, Outbox, OutboxRecord, OutboxRelay
from .publisher import BUILTIN_STAGES, SagaEventPublisher
from .results import BatchPublishResult
from .stage import CallNext, Publication, PublishStage, compose
from .stages import (
    BatchStage,
    BrokerSink,
    ReliabilityStage,
    SerializeStage,
    TransactionStage,
    is_retryable,
)
from .transaction import PublisherTransaction

__all__ = [
    "BUILTIN_STAGES",
    "BatchPublishResult",
    "BatchStage",
    "BrokerSink",
    "CallNext",
    "DLQRetryPolicy",
    "MemoryOutbox",
    "Outbox",
    "OutboxRecord",
    "OutboxRelay",
    "Publication",
    "PublishStage",
    "PublisherConfig",
    "PublisherMetrics",
    "PublisherTransaction",
    "ReliabilityConfig",
    "ReliabilityMetrics",
    "ReliabilityStage",
    "SagaEventPublisher",
    "SerializeStage",
    "TopicStrategy",
    "TransactionStage",
    "compose",
    "is_retryable",
]
