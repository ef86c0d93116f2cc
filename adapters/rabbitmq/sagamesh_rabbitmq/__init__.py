"""sagamesh broker adapter for RabbitMQ (``amqp://`` and ``amqps://``), built on aio-pika.

aio-pika is imported when a broker connects, not when this package is imported.
"""

from ._options import RabbitOptions
from ._publish import PublishNackedError, UnroutableMessageError
from ._subscription import RabbitDelivery, RabbitSubscription
from ._transaction import RabbitTransaction
from .broker import RabbitBroker

__all__ = [
    "PublishNackedError",
    "RabbitBroker",
    "RabbitDelivery",
    "RabbitOptions",
    "RabbitSubscription",
    "RabbitTransaction",
    "UnroutableMessageError",
]
