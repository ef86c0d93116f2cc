"""Message <-> AMQP: id as ``message_id``, key and retry state in ``x-sagamesh-*`` headers.

The ``x-sagamesh-*`` headers and the headers RabbitMQ adds when it dead-letters (``x-death``,
``x-first-death-*``, ...) are transport details: they are stripped on receive, so
``Message.headers`` round-trips exactly what the publisher set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sagamesh.message import Headers, Message

if TYPE_CHECKING:
    from aio_pika.abc import AbstractIncomingMessage
    from pamqp.commands import Basic

KEY = "x-sagamesh-key"
TOPIC = "x-sagamesh-topic"
ATTEMPT = "x-sagamesh-attempt"
DELIVERY_COUNT = "x-delivery-count"  # quorum queues: deliveries returned so far

_TRANSPORT_HEADERS = frozenset({
    KEY, TOPIC, ATTEMPT, DELIVERY_COUNT, "x-death",
    "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason",
    "x-last-death-exchange", "x-last-death-queue", "x-last-death-reason",
})
PERSISTENT = 2


def properties(message: Message, *, topic: str | None = None,
               attempt: int | None = None) -> Basic.Properties:
    """AMQP properties of ``message``; ``topic``/``attempt`` are set when re-routing a retry."""
    from pamqp.commands import Basic

    headers: dict[str, Any] = dict(message.headers)
    if message.key is not None:
        headers[KEY] = message.key
    if topic is not None:
        headers[TOPIC] = topic
    if attempt is not None:
        headers[ATTEMPT] = str(attempt)
    return Basic.Properties(
        content_type=message.headers.get(Headers.CONTENT_TYPE),
        delivery_mode=PERSISTENT,
        message_id=message.id,
        headers=headers,
    )


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return value if isinstance(value, str) else str(value)


def decode(raw: AbstractIncomingMessage) -> tuple[Message, int]:
    """The sagamesh message carried by ``raw`` and its delivery attempt (counts from 1).

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


def _int(value: Any, default: int) -> int:
    if value is None:
        return default
    try:
        return int(_text(value))
    except ValueError:
        return default
