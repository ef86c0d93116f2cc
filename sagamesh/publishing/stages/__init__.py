"""The built-in publish stages, in pipeline order: serialize → reliability → batch → transaction."""

from .batch import BatchStage
from .reliability import ReliabilityStage, is_retryable
from .serialize import SerializeStage
from .sink import BrokerSink
from .transaction import TransactionStage

__all__ = [
    "BatchStage",
    "BrokerSink",
    "ReliabilityStage",
    "SerializeStage",
    "TransactionStage",
    "is_retryable",
]
