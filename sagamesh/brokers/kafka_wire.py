"""Message <-> Kafka record: the wire contract that the ``sagamesh_kafka`` adapter and FastStream
mounts (:mod:`sagamesh.faststream.bindings`) share, so either side reads what the other wrote.
Pure: no Kafka client is imported.

The key partitions, the id travels in a header, headers stay intact.
"""

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


def _text(raw: bytes | None) -> str:
    """A foreign header or key that is not UTF-8 still arrives (with U+FFFD in its place)."""
    if raw is None:
        return ""
    try:
        return raw.decode()  # strict UTF-8 without arguments: the cheap call
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace")


def from_record(record: Any) -> Message:
    """A received ``ConsumerRecord`` as a :class:`Message` (foreign records get a stable id)."""
    headers: dict[str, str] = {}
    message_id = ""
    for name, raw in record.headers or ():
        if raw is None:
            value = ""
        else:
            try:  # _text, inlined: this runs for every header of every record
                value = raw.decode()
            except UnicodeDecodeError:
                value = raw.decode("utf-8", "replace")
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
        key=None if key is None else _text(key),
        headers=headers,
        body=record.value if record.value is not None else b"",
    )
