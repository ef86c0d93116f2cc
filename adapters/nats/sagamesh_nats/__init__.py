"""sagamesh broker adapter for NATS JetStream (``nats://`` URLs)."""

from .broker import NatsBroker
from .options import NatsOptions
from .subscription import NatsDelivery, NatsSubscription

__all__ = ["NatsBroker", "NatsDelivery", "NatsOptions", "NatsSubscription"]
