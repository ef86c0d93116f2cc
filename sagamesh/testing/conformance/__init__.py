"""Broker conformance suite: subclass :class:`BrokerConformance` to prove an adapter.

See ``docs/brokers.md`` for how to run it against a third-party adapter.
"""

from .collector import Collector, Received
from .suite import BrokerConformance
from .support import BrokerFactory, BrokerPool, Names, Restartable, messages, publish_all

__all__ = [
    "BrokerConformance",
    "BrokerFactory",
    "BrokerPool",
    "Collector",
    "Names",
    "Received",
    "Restartable",
    "messages",
    "publish_all",
]
