"""sagamesh: saga orchestration and broker-agnostic messaging middleware for asyncio."""

from .brokers import (
    Broker,
    Capabilities,
    Delivery,
    Health,
    MemoryBroker,
    Subscription,
    create_broker,
)
from .errors import (
    BatchPublishError,
    BrokerUnavailableError,
    BusinessError,
    ConcurrencyConflictError,
    ConfigError,
    InvalidEventError,
    PublisherClosedError,
    PublishTimeoutError,
    RetryableError,
    SagameshError,
    SerializationError,
    TransactionError,
)
from .events import ErrorType, EventType, SagaError, SagaEvent
from .message import Headers, Message
from .retry import (
    ExponentialBackoffRetryPolicy,
    FixedDelayRetryPolicy,
    LinearBackoffRetryPolicy,
    NoRetryPolicy,
    RetryPolicy,
)

__version__ = "0.1.0"

__all__ = [
    "BatchPublishError",
    "Broker",
    "BrokerUnavailableError",
    "BusinessError",
    "Capabilities",
    "ConcurrencyConflictError",
    "ConfigError",
    "Delivery",
    "ErrorType",
    "EventType",
    "ExponentialBackoffRetryPolicy",
    "FixedDelayRetryPolicy",
    "Headers",
    "Health",
    "InvalidEventError",
    "LinearBackoffRetryPolicy",
    "MemoryBroker",
    "Message",
    "NoRetryPolicy",
    "PublishTimeoutError",
    "PublisherClosedError",
    "RetryPolicy",
    "RetryableError",
    "SagaError",
    "SagaEvent",
    "SagameshError",
    "SerializationError",
    "Subscription",
    "TransactionError",
    "create_broker",
]
