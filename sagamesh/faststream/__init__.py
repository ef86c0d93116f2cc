"""FastStream integration: mount a sagamesh :class:`EventRouter` into a FastStream 0.7 app on
NATS, RabbitMQ or Kafka with the same routing, filters, priorities, per-saga order, retries
and DLQ as ``EventConsumer``. FastStream is imported only when :func:`mount` is called."""

from .mount import Mount, mount

__all__ = ["Mount", "mount"]
