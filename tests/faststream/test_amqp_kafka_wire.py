"""The RabbitMQ and Kafka bindings share their wire modules with the sagamesh_rabbitmq and
sagamesh_kafka adapters: what one writes the other reads, and both name the same queues."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from aiokafka.structs import ConsumerRecord
from sagamesh_rabbitmq import _topology as topology
from sagamesh_rabbitmq._codec import properties

from sagamesh.brokers import amqp_wire, kafka_wire
from sagamesh.faststream.bindings import KafkaBinding, RabbitBinding
from sagamesh.message import Headers, Message

SENT = Message(id="m-1", topic="orders.events", key="order-7",
               headers={Headers.CONTENT_TYPE: "application/json", "note": "x"}, body=b"{}")


class Publisher:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def publish(self, body: bytes, **kwargs: Any) -> None:
        self.calls.append({"body": body, **kwargs})


def _amqp(props: Any, *, routing_key: str, redelivered: bool = False) -> Any:
    """An incoming AMQP message as aio-pika presents it, from the properties it was sent with."""
    return SimpleNamespace(headers=props.headers, content_type=props.content_type,
                           message_id=props.message_id, redelivered=redelivered,
                           routing_key=routing_key, body=b"{}")


def test_rabbit_binding_reads_what_the_adapter_publishes_and_retries() -> None:
    binding = RabbitBinding(object())
    first = SimpleNamespace(raw_message=_amqp(properties(SENT), routing_key=SENT.topic))
    assert binding.received(first, SENT.topic) == (SENT, 1, None, None)
    # the adapter's delayed retry: routed back by queue name, topic and attempt in headers
    retry = properties(SENT, topic=SENT.topic, attempt=3)
    again = SimpleNamespace(raw_message=_amqp(retry, routing_key="sagamesh:q:g",
                                              redelivered=True))
    assert binding.received(again, SENT.topic) == (SENT, 4, None, None)


async def test_rabbit_binding_publishes_what_the_adapter_reads() -> None:
    publisher = Publisher()
    fs_broker = SimpleNamespace(publisher=lambda **_: publisher)
    await RabbitBinding(fs_broker).wire_publisher("orders.dlq")(SENT)
    (call,) = publisher.calls
    sent_as = SimpleNamespace(headers=call["headers"], content_type=call["content_type"],
                              message_id=call["message_id"], redelivered=False,
                              routing_key=SENT.topic, body=call["body"])
    assert amqp_wire.decode(sent_as) == (SENT, 1)


def test_rabbit_binding_subscribes_to_the_adapters_group_queue() -> None:
    declared: list[Any] = []

    def subscriber(queue: Any, *_: Any, **__: Any) -> Any:
        declared.append(queue)
        return lambda handler: handler

    binding = RabbitBinding(SimpleNamespace(subscriber=subscriber), exchange="ex")
    for topic in ("saga.events", "saga.東京", "t" * 300):
        binding.subscribe(topic, "g", ordered=False, max_workers=4, handler=print,
                          title="", description="")
        assert declared[-1].name == topology.group_queue("ex", topic, "g")
        assert topology.valid_name(declared[-1].name)


def _record(headers: list[tuple[str, bytes]], key: bytes | None) -> ConsumerRecord[Any, Any]:
    return ConsumerRecord(topic=SENT.topic, partition=2, offset=9, timestamp=0,
                          timestamp_type=0, key=key, value=b"{}", checksum=None,
                          serialized_key_size=0, serialized_value_size=2, headers=headers)


def test_kafka_binding_reads_what_the_adapter_writes() -> None:
    record = _record(kafka_wire.record_headers(SENT), kafka_wire.record_key(SENT))
    received = KafkaBinding(object()).received(SimpleNamespace(raw_message=record), SENT.topic)
    assert received == (SENT, 1, 2, 9)


async def test_kafka_binding_publishes_what_the_adapter_reads() -> None:
    publisher = Publisher()
    fs_broker = SimpleNamespace(publisher=lambda *_, **__: publisher)
    # a header that claims to be the id never overrides it, on either side
    message = Message(id="m-2", topic=SENT.topic, key=None,
                      headers={**SENT.headers, kafka_wire.ID_HEADER: "forged"}, body=b"{}")
    await KafkaBinding(fs_broker).wire_publisher(SENT.topic)(message)
    (call,) = publisher.calls
    record = _record([(k, v.encode()) for k, v in call["headers"].items()], call["key"])
    assert kafka_wire.from_record(record) == Message(
        id="m-2", topic=SENT.topic, key=None, headers=SENT.headers, body=b"{}")
    adapter = _record(kafka_wire.record_headers(message), None)
    assert kafka_wire.from_record(adapter) == kafka_wire.from_record(record)
