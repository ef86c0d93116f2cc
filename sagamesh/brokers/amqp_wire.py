"""Message <-> AMQP 0-9-1, and AMQP names: the wire contract that the ``sagamesh_rabbitmq``
adapter and FastStream mounts (:mod:`sagamesh.faststream.bindings`) share, so either side reads
what the other wrote and both find the same queues. Pure: no AMQP client is imported.

The id travels as ``message_id``; the key and the retry state in ``x-sagamesh-*`` headers.
Those headers and the ones RabbitMQ adds when it dead-letters (``x-death``,
``x-first-death-*``, ...) are transport details: they are stripped on receive, so
``Message.headers`` round-trips exactly what the publisher set.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from sagamesh.message import Headers, Message

KEY = "x-sagamesh-key"
TOPIC = "x-sagamesh-topic"
ATTEMPT = "x-sagamesh-attempt"
DELIVERY_COUNT = "x-delivery-count"  # quorum queues: deliveries returned so far

_TRANSPORT_HEADERS = frozenset({
    KEY, TOPIC, ATTEMPT, DELIVERY_COUNT, "x-death",
    "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason",
    "x-last-death-exchange", "x-last-death-queue", "x-last-death-reason",
})

_MAX_NAME = 255  # bytes, an AMQP short string
# What the AMQP client library accepts in queue and exchange names (pamqp's domain check).
_ALLOWED = re.compile(r"[a-zA-Z0-9\-_.:@#,/+ ]*")
_DISALLOWED = re.compile(r"[^a-zA-Z0-9\-_.:@#,/+ ]")


def valid_name(name: str) -> bool:
    return len(name.encode()) <= _MAX_NAME and _ALLOWED.fullmatch(name) is not None


def fit_name(name: str) -> str:
    """``name`` if AMQP accepts it; otherwise a legal, still-unique rendering of it."""
    if valid_name(name):
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:16]
    safe = _DISALLOWED.sub("_", name)[: _MAX_NAME - 17]
    return f"{safe}+{digest}"


def group_queue(exchange: str, topic: str, group: str) -> str:
    """The durable queue of consumer ``group`` on ``topic`` (shared by the group's members)."""
    return fit_name(f"{exchange}:{topic}:{group}")


def wire_headers(message: Message, *, topic: str | None = None,
                 attempt: int | None = None) -> dict[str, Any]:
    """The AMQP headers of ``message``; ``topic``/``attempt`` are set when re-routing a retry."""
    headers: dict[str, Any] = dict(message.headers)
    if message.key is not None:
        headers[KEY] = message.key
    if topic is not None:
        headers[TOPIC] = topic
    if attempt is not None:
        headers[ATTEMPT] = str(attempt)
    return headers


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return value if isinstance(value, str) else str(value)


def _int(value: Any, default: int) -> int:
    if value is None:
        return default
    try:
        return int(_text(value))
    except ValueError:
        return default


def decode(raw: Any) -> tuple[Message, int]:
    """The sagamesh message carried by ``raw`` (an aio-pika incoming message) and its delivery
    attempt (counts from 1).

    The attempt is the ``x-sagamesh-attempt`` the adapter set when it re-published a nacked
    message, plus RabbitMQ's redelivery count: exact on quorum queues (``x-delivery-count``),
    at least one more when a classic queue marks the delivery ``redelivered``.
    """
    amqp_headers = raw.headers or {}
    headers: dict[str, str] = {}
    for name, value in amqp_headers.items():
        if name not in _TRANSPORT_HEADERS:
            headers[name] = _text(value)
    if raw.content_type and Headers.CONTENT_TYPE not in headers:
        headers[Headers.CONTENT_TYPE] = raw.content_type
    attempt = _int(amqp_headers.get(ATTEMPT), 1)
    returned = amqp_headers.get(DELIVERY_COUNT)
    if returned is not None:
        attempt += _int(returned, 0)
    elif raw.redelivered:
        attempt += 1
    key = amqp_headers.get(KEY)
    topic = amqp_headers.get(TOPIC)
    message = Message(
        id=raw.message_id or "",
        topic=_text(topic) if topic is not None else (raw.routing_key or ""),
        key=_text(key) if key is not None else None,
        headers=headers,
        body=raw.body,
    )
    return message, attempt
