"""Message ↔ Kafka record: the key partitions, the id travels in a header, headers stay intact."""

from __future__ import annotations

from typing import Any

from sagamesh.message import Message

ID_HEADER = "sagamesh-message-id"
"""Kafka has no message id; this header carries :attr:`Message.id` and is removed on receipt."""


def record_headers(message: Message) -> list[tuple[str, bytes]]:
    headers = [(ID_HEADER, message.id.encode())]
    headers.extend((name, value.encode()) for name, value in message.headers.items()
                   if name != ID_HEADER)
    return headers


def record_key(message: Message) -> bytes | None:
    return None if message.key is None else message.key.encode()


def from_record(record: Any) -> Message:
    """A received ``ConsumerRecord`` as a :class:`Message` (foreign records get a stable id)."""
    headers: dict[str, str] = {}
    message_id = ""
    for name, raw in record.headers or ():
        value = raw.decode("utf-8", "replace") if raw is not None else ""
        if name == ID_HEADER:
            message_id = value
        else:
            headers[name] = value
    if not message_id:
        message_id = f"{record.topic}-{record.partition}-{record.offset}"
    key = record.key
    return Message(
        id=message_id,
        topic=record.topic,
        key=None if key is None else key.decode("utf-8", "replace"),
        headers=headers,
        body=record.value if record.value is not None else b"",
    )
