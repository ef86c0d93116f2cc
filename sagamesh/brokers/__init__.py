"""Broker protocol, the URL-scheme registry and the embedded memory broker."""

from .base import (
    Broker,
    BrokerTransaction,
    Capabilities,
    Delivery,
    Health,
    MessageHandler,
    Subscription,
    TransactionalBroker,
)
from .memory import MemoryBroker
from .registry import available_schemes, broker_class, create_broker

__all__ = [
    "Broker",
    "BrokerTransaction",
    "Capabilities",
    "Delivery",
    "Health",
    "MemoryBroker",
    "MessageHandler",
    "Subscription",
    "TransactionalBroker",
    "available_schemes",
    "broker_class",
    "create_broker",
]
