"""Per-family helpers for the FastStream mount tests: broker construction, a sagamesh-format
publisher and a DLQ subscriber declared the way the mount's DLQ publisher expects.

(No ``__init__.py`` in this folder: a package named ``faststream`` would shadow FastStream.)"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from sagamesh.brokers.nats_wire import stream_name
from sagamesh.events import SagaEvent
from sagamesh.faststream.bindings import binding_for, raw_body
from sagamesh.message import Message
from sagamesh.serialization import get_serializer, to_message


@dataclass
class Family:
    name: str
    make: Callable[..., Any]  # (url or None) -> FastStream broker
    test_broker: Any  # TestNatsBroker & co

    def publisher(self, fs_broker: Any, topic: str) -> Callable[[SagaEvent], Awaitable[None]]:
        """Publish events in the sagamesh wire format through FastStream."""
        send = binding_for(fs_broker).wire_publisher(topic)

        async def publish(event: SagaEvent) -> None:
            await send(to_message(event, topic, get_serializer("json")))

        return publish

    def raw_publisher(self, fs_broker: Any, topic: str) -> Callable[[Message], Awaitable[None]]:
        return binding_for(fs_broker).wire_publisher(topic)

    def dlq_subscriber(self, fs_broker: Any, topic: str, sink: list[Any]) -> None:
        """Collect (headers, body) of what reaches ``topic`` (declared like the mount does)."""

        from faststream import Context

        async def handler(body: bytes, message: Any = Context("message")) -> None:
            sink.append((dict(message.headers), message.body))

        if self.name == "nats":
            from faststream.nats import JStream

            fs_broker.subscriber(topic, stream=JStream(stream_name("SAGAMESH_", topic),
                                                       subjects=[topic]),
                                 decoder=raw_body)(handler)
        elif self.name == "rabbitmq":
            from faststream.rabbit import ExchangeType, RabbitExchange, RabbitQueue

            fs_broker.subscriber(RabbitQueue(f"collect-{topic}", routing_key=topic,
                                             auto_delete=True),
                                 RabbitExchange("sagamesh", type=ExchangeType.TOPIC,
                                                durable=True), decoder=raw_body)(handler)
        else:
            fs_broker.subscriber(topic, group_id=f"collect-{topic}",
                                 auto_offset_reset="earliest", decoder=raw_body)(handler)


def _nats(url: str | None = None) -> Any:
    from faststream.nats import NatsBroker

    return NatsBroker(url or "nats://127.0.0.1:4222", logger=None)


def _rabbit(url: str | None = None) -> Any:
    from faststream.rabbit import RabbitBroker

    return RabbitBroker(url or "amqp://guest:guest@127.0.0.1:5672/", logger=None)


def _kafka(url: str | None = None) -> Any:
    from faststream.kafka import KafkaBroker

    return KafkaBroker(url or "127.0.0.1:9092", logger=None)


def families() -> list[Family]:
    from faststream.kafka import TestKafkaBroker
    from faststream.nats import TestNatsBroker
    from faststream.rabbit import TestRabbitBroker

    return [Family("nats", _nats, TestNatsBroker), Family("rabbitmq", _rabbit, TestRabbitBroker),
            Family("kafka", _kafka, TestKafkaBroker)]


FAMILIES = families()


@pytest.fixture(params=FAMILIES, ids=[f.name for f in FAMILIES])
def family(request: pytest.FixtureRequest) -> Family:
    """Each FastStream broker family in turn."""
    chosen: Family = request.param
    return chosen


@pytest.fixture
def by_name() -> dict[str, Family]:
    """The families by name, for tests that need one particular broker."""
    return {f.name: f for f in FAMILIES}
