"""Message -> AMQP properties (the wire contract itself is :mod:`sagamesh.brokers.amqp_wire`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sagamesh.brokers.amqp_wire import wire_headers
from sagamesh.message import Headers, Message

if TYPE_CHECKING:
    from pamqp.commands import Basic

PERSISTENT = 2


def properties(message: Message, *, topic: str | None = None,
               attempt: int | None = None) -> Basic.Properties:
    """AMQP properties of ``message``; ``topic``/``attempt`` are set when re-routing a retry."""
    from pamqp.commands import Basic

    return Basic.Properties(
        content_type=message.headers.get(Headers.CONTENT_TYPE),
        delivery_mode=PERSISTENT,
        message_id=message.id,
        headers=wire_headers(message, topic=topic, attempt=attempt),
    )
