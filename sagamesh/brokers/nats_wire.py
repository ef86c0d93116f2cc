"""Message <-> NATS headers and payload, and NATS names: the wire contract that the
``sagamesh_nats`` adapter and FastStream mounts (:mod:`sagamesh.faststream.bindings`) share, so
either side reads what the other wrote. Pure: no NATS client is imported.

The id travels as ``Nats-Msg-Id`` (JetStream de-duplicates on it), the key as
``sagamesh-key``. Header values NATS would alter (surrounding whitespace, line breaks) are
base64-encoded behind a marker so every value survives byte for byte.
"""

from __future__ import annotations

import base64
import hashlib
import re

from sagamesh.errors import SerializationError
from sagamesh.message import Headers, Message

MSG_ID = "Nats-Msg-Id"
KEY = "sagamesh-key"
_ESCAPED = "sagamesh-b64:"
_RESERVED = frozenset({MSG_ID, KEY})
_VALID_NAME = re.compile(r"[!-9;-~]+")  # printable ASCII except ':' (RFC 7230 field-name-ish)
# sagamesh's own header names are valid by construction: no pattern match per message for them
_KNOWN_NAMES = frozenset(
    value for name, value in vars(Headers).items()
    if name.isupper() and isinstance(value, str) and _VALID_NAME.fullmatch(value))


# Stream and consumer names may not hold '.', '*', '>', whitespace or path separators.
_INVALID_NAME = re.compile(r"[^A-Za-z0-9_-]")
_MAX_NAME = 200


def name_digest(text: str) -> str:
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:8]


def safe_name(text: str) -> str:
    """``text`` as a valid stream/consumer name; a hash suffix keeps names distinct when
    characters changed."""
    clean = _INVALID_NAME.sub("_", text)
    if clean != text or len(clean) > _MAX_NAME:
        clean = f"{clean[:_MAX_NAME]}_{name_digest(text)}"
    return clean


def stream_name(prefix: str, topic: str) -> str:
    """The stream of ``topic`` (one per topic unless the adapter shares one)."""
    return safe_name(f"{prefix}{topic}")


def _needs_escape(value: str) -> bool:
    return (value != value.strip() or "\r" in value or "\n" in value
            or value.startswith(_ESCAPED))


def dedup_id(message: Message) -> str:
    """A message recovered from a DLQ is republished on purpose: its recovery count makes it
    a new message for JetStream's duplicate window instead of a silently dropped duplicate."""
    recoveries = message.headers.get(Headers.DLQ_RECOVERIES)
    return f"{message.id}~r{recoveries}" if recoveries else message.id


def encode_headers(message: Message) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in message.headers.items():
        if name in _RESERVED:
            continue
        if name not in _KNOWN_NAMES and (not name or not _VALID_NAME.fullmatch(name)):
            raise SerializationError(f"message {message.id}: header name {name!r} cannot "
                                     "travel in NATS headers (printable ASCII, no ':' or spaces)")
        if _needs_escape(value):
            value = _ESCAPED + base64.b64encode(value.encode()).decode()
        headers[name] = value
    headers[MSG_ID] = dedup_id(message)
    if message.key is not None:
        headers[KEY] = message.key if not _needs_escape(message.key) else (
            _ESCAPED + base64.b64encode(message.key.encode()).decode())
    return headers


def header_block(message: Message) -> bytes:
    """The headers as the NATS header block of an HPUB frame (what nats-py's ``publish``
    builds from :func:`encode_headers`' dict, without its per-name regex: the names are
    checked there)."""
    lines = "".join([f"{name}: {value}\r\n" for name, value in encode_headers(message).items()])
    return f"NATS/1.0\r\n{lines}\r\n".encode()


def _decode_value(value: str) -> str:
    if value.startswith(_ESCAPED):
        return base64.b64decode(value[len(_ESCAPED):]).decode()
    return value


def decode(topic: str, data: bytes, raw: dict[str, str] | None, fallback_id: str) -> Message:
    """Rebuild the Message; ``fallback_id`` (stream sequence) names a message published
    without sagamesh (no ``Nats-Msg-Id``)."""
    headers: dict[str, str] = {}
    message_id = fallback_id
    key: str | None = None
    if raw:
        for name, value in raw.items():
            if name == MSG_ID:
                message_id = value
            elif name == KEY:
                key = _decode_value(value)
            else:
                headers[name] = _decode_value(value)
        recoveries = headers.get(Headers.DLQ_RECOVERIES)
        if recoveries:
            message_id = message_id.removesuffix(f"~r{recoveries}")
    return Message(id=message_id, topic=topic, key=key, headers=headers, body=data)
