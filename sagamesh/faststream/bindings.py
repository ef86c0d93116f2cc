"""Per-broker glue between FastStream 0.7 and the sagamesh wire format.

One binding per FastStream broker family (NATS JetStream, RabbitMQ, Kafka) knows how to
declare a subscriber for a sagamesh topic and consumer group, turn a received FastStream
message back into a sagamesh :class:`Message` (id, key, headers, delivery attempt) exactly as
the matching sagamesh adapter would, settle it, and publish a DLQ copy in the same format. So
events published by a ``SagaEventPublisher`` over any adapter reach a mounted router, and dead
letters written by a mount are read by ``DeadLetterQueueHandler`` over the adapter.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..brokers import amqp_wire, kafka_wire, nats_wire
from ..errors import ConfigError
from ..message import Headers, Message

Received = tuple[Message, int, int | None, int | None]  # message, attempt, partition, offset
Handler = Callable[..., Awaitable[None]]


async def raw_body(message: Any) -> bytes:
    """FastStream decoder keeping the body as bytes (sagamesh decodes by content-type)."""
    body: bytes = message.body
    return body


class Binding:
    """What the mount needs from one broker family."""

    system = ""

    def __init__(self, fs_broker: Any) -> None:
        self.fs_broker = fs_broker

    def subscribe(self, topic: str, group: str, *, ordered: bool, max_workers: int,
                  handler: Handler, title: str, description: str) -> Any:
        raise NotImplementedError

    def received(self, message: Any, topic: str) -> Received:
        raise NotImplementedError

    def wire_publisher(self, topic: str, *,
                       title: str = "") -> Callable[[Message], Awaitable[None]]:
        raise NotImplementedError

    async def ack(self, message: Any) -> None:
        await message.ack()

    async def nack(self, message: Any, delay: float | None) -> None:
        await message.nack()

    async def reject(self, message: Any) -> None:
        await message.reject()

    async def keep_alive(self, message: Any) -> None:
        """Tell the broker a delivery is still being worked on (before a retry wait)."""


# -- NATS JetStream -------------------------------------------------------------------------


class NatsBinding(Binding):
    """JetStream: stream ``{stream_prefix}{topic}`` (the adapter's), durable pull consumer named
    after the group, so mounted subscribers and ``EventConsumer`` members of one group share
    the work."""

    system = "nats"

    def __init__(self, fs_broker: Any, *, stream_prefix: str = "SAGAMESH_") -> None:
        super().__init__(fs_broker)
        self.stream_prefix = stream_prefix

    def _stream(self, topic: str) -> Any:
        from faststream.nats import JStream

        return JStream(nats_wire.stream_name(self.stream_prefix, topic), subjects=[topic],
                       duplicate_window=120.0)

    def subscribe(self, topic: str, group: str, *, ordered: bool, max_workers: int,
                  handler: Handler, title: str, description: str) -> Any:
        from faststream.middlewares import AckPolicy
        from faststream.nats import PullSub

        subscriber = self.fs_broker.subscriber(
            topic, stream=self._stream(topic), durable=nats_wire.safe_name(group),
            pull_sub=PullSub(batch_size=max(1, max_workers)), max_workers=max_workers,
            ack_policy=AckPolicy.MANUAL, decoder=raw_body, title=title,
            description=description)
        return subscriber(handler)

    def received(self, message: Any, topic: str) -> Received:
        raw = message.raw_message
        attempt, sequence = 1, None
        try:
            metadata = raw.metadata
            attempt = int(metadata.num_delivered or 1)
            sequence = int(metadata.sequence.stream)
        except Exception:  # not a JetStream message (FastStream's TestBroker)
            pass
        fallback_id = str(sequence) if sequence is not None else message.message_id
        decoded = nats_wire.decode(topic, message.body,
                                   getattr(raw, "headers", None) or message.headers,
                                   fallback_id)
        return decoded, attempt, None, sequence

    def wire_publisher(self, topic: str, *,
                       title: str = "") -> Callable[[Message], Awaitable[None]]:
        publisher = self.fs_broker.publisher(topic, stream=self._stream(topic),
                                             title=title or f"sagamesh:{topic}:publish")

        async def publish(message: Message) -> None:
            headers = nats_wire.encode_headers(message)
            await publisher.publish(message.body, headers=headers,
                                    correlation_id=message.id, timeout=10.0)

        return publish

    async def nack(self, message: Any, delay: float | None) -> None:
        await message.nack(delay=delay)

    async def keep_alive(self, message: Any) -> None:
        try:
            await message.in_progress()
        except Exception:  # TestBroker messages have no JetStream ack subject
            pass


# -- RabbitMQ -------------------------------------------------------------------------------

class RabbitBinding(Binding):
    """A durable topic exchange (``sagamesh`` by default, the adapter's) and one durable queue
    per group and topic (single active consumer when ordered), shared with ``EventConsumer``
    members of the same group."""

    system = "rabbitmq"

    def __init__(self, fs_broker: Any, *, exchange: str = "sagamesh") -> None:
        super().__init__(fs_broker)
        self.exchange_name = exchange

    def _exchange(self) -> Any:
        from faststream.rabbit import ExchangeType, RabbitExchange

        return RabbitExchange(self.exchange_name, type=ExchangeType.TOPIC, durable=True)

    def subscribe(self, topic: str, group: str, *, ordered: bool, max_workers: int,
                  handler: Handler, title: str, description: str) -> Any:
        from faststream.middlewares import AckPolicy
        from faststream.rabbit import Channel, RabbitQueue

        arguments: Any = {"x-single-active-consumer": True} if ordered else None
        queue = RabbitQueue(amqp_wire.group_queue(self.exchange_name, topic, group), durable=True,
                            routing_key=topic, arguments=arguments)
        # aio-pika runs every delivery of a channel as its own task: in ordered mode one
        # unacknowledged message at a time is the only way FastStream keeps the queue order.
        channel = Channel(prefetch_count=1 if ordered else max(1, max_workers))
        subscriber = self.fs_broker.subscriber(queue, self._exchange(), channel=channel,
                                               ack_policy=AckPolicy.MANUAL, decoder=raw_body,
                                               title=title, description=description)
        return subscriber(handler)

    def received(self, message: Any, topic: str) -> Received:
        decoded, attempt = amqp_wire.decode(message.raw_message)
        return decoded, attempt, None, None

    def wire_publisher(self, topic: str, *,
                       title: str = "") -> Callable[[Message], Awaitable[None]]:
        # mandatory: with no queue bound (no DLQ group yet) the publish fails and the original
        # is nacked instead of the dead letter vanishing.
        publisher = self.fs_broker.publisher(exchange=self._exchange(), routing_key=topic,
                                             mandatory=True, persist=True,
                                             title=title or f"sagamesh:{topic}:publish")

        async def publish(message: Message) -> None:
            await publisher.publish(message.body, headers=amqp_wire.wire_headers(message),
                                    message_id=message.id, correlation_id=message.id,
                                    content_type=message.headers.get(Headers.CONTENT_TYPE))

        return publish

    async def nack(self, message: Any, delay: float | None) -> None:
        await message.nack(requeue=True)

    async def reject(self, message: Any) -> None:
        await message.reject(requeue=False)


# -- Kafka ----------------------------------------------------------------------------------


class KafkaBinding(Binding):
    """The topic itself and ``group`` as the consumer group (manual commits after each
    settled record), shared with ``EventConsumer`` members of the same group."""

    system = "kafka"

    def subscribe(self, topic: str, group: str, *, ordered: bool, max_workers: int,
                  handler: Handler, title: str, description: str) -> Any:
        from faststream.middlewares import AckPolicy

        subscriber = self.fs_broker.subscriber(
            topic, group_id=group, auto_offset_reset="earliest",
            ack_policy=AckPolicy.MANUAL, decoder=raw_body, title=title,
            description=description)
        return subscriber(handler)

    def received(self, message: Any, topic: str) -> Received:
        raw = message.raw_message
        return kafka_wire.from_record(raw), 1, raw.partition, raw.offset

    def wire_publisher(self, topic: str, *,
                       title: str = "") -> Callable[[Message], Awaitable[None]]:
        publisher = self.fs_broker.publisher(topic, title=title or f"sagamesh:{topic}:publish")

        async def publish(message: Message) -> None:
            headers = {**message.headers, kafka_wire.ID_HEADER: message.id}  # as the adapter
            await publisher.publish(message.body, key=message.key.encode()
                                    if message.key is not None else None, headers=headers,
                                    correlation_id=message.id)

        return publish


def binding_for(fs_broker: Any, **options: Any) -> Binding:
    """The binding of ``fs_broker``'s family (a FastStream broker or router)."""
    module = type(fs_broker).__module__
    if module.startswith("faststream.nats"):
        return NatsBinding(fs_broker, **options)
    if module.startswith("faststream.rabbit"):
        return RabbitBinding(fs_broker, **options)
    if module.startswith("faststream.kafka"):
        return KafkaBinding(fs_broker, **options)
    raise ConfigError(f"cannot mount on {type(fs_broker).__name__} ({module}): use a "
                      "FastStream NatsBroker, RabbitBroker or KafkaBroker (or their routers)",
                      field="fs_broker")


__all__ = ["Binding", "KafkaBinding", "NatsBinding", "RabbitBinding", "binding_for",
           "raw_body"]
