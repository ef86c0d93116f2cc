"""The NATS binding and the sagamesh_nats adapter share one wire module: what one writes the
other reads, including escaped header values and keys and a DLQ-recovered id."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from sagamesh.brokers import nats_wire
from sagamesh.faststream.bindings import NatsBinding
from sagamesh.message import Headers, Message


def _received(binding: NatsBinding, headers: dict[str, str], body: bytes) -> Any:
    raw = SimpleNamespace(headers=headers, metadata=SimpleNamespace(
        num_delivered=2, sequence=SimpleNamespace(stream=41)))
    message = SimpleNamespace(raw_message=raw, headers={}, body=body, message_id="fs-id")
    return binding.received(message, "orders.events")


def test_binding_reads_what_the_adapter_encodes() -> None:
    sent = Message(id="m-1", topic="orders.events", key=" key\nwith breaks",
                   headers={"note": "  padded  ", Headers.DLQ_RECOVERIES: "2"}, body=b"{}")
    wire = nats_wire.encode_headers(sent)
    assert wire[nats_wire.MSG_ID] == "m-1~r2"  # a new message for JetStream's dedup window
    message, attempt, partition, offset = _received(NatsBinding(object()), wire, b"{}")
    assert message == sent
    assert (attempt, partition, offset) == (2, None, 41)


def test_binding_names_a_foreign_message_by_its_stream_sequence() -> None:
    message, *_ = _received(NatsBinding(object()), {}, b"x")
    assert message.id == "41" and message.key is None and message.headers == {}


async def test_binding_publishes_in_the_adapter_encoding() -> None:
    published: list[dict[str, str]] = []

    class Publisher:
        async def publish(self, body: bytes, *, headers: dict[str, str], **_: Any) -> None:
            published.append(headers)

    fs_broker = SimpleNamespace(publisher=lambda *a, **k: Publisher())
    publish = NatsBinding(fs_broker).wire_publisher("orders.dlq")
    message = Message(id="d-1", topic="orders.dlq", key="s\n1", headers={"why": "a\r\nb"})
    await publish(message)
    assert published == [nats_wire.encode_headers(message)]
    assert nats_wire.decode("orders.dlq", b"", published[0], "0") == message
