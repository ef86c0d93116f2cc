"""Message -> AMQP properties (the wire contract itself is :mod:`sagamesh.brokers.amqp_wire`)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from sagamesh.brokers.amqp_wire import wire_headers
from sagamesh.message import Headers, Message

if TYPE_CHECKING:
    from pamqp.commands import Basic

PERSISTENT = 2


@functools.cache
def _properties_type() -> Any:
    """pamqp's ``Basic.Properties``, imported on first use (when a broker publishes), not with
    this package; cached, because an import statement per message costs more than the rest of
    building the properties."""
    from pamqp.commands import Basic

    return Basic.Properties


def properties(message: Message, *, topic: str | None = None,
               attempt: int | None = None) -> Basic.Properties:
    """AMQP properties of ``message``; ``topic``/``attempt`` are set when re-routing a retry."""
    return _properties_type()(  # type: ignore[no-any-return]
        content_type=message.headers.get(Headers.CONTENT_TYPE),
        delivery_mode=PERSISTENT,
        message_id=message.id,
        headers=wire_headers(message, topic=topic, attempt=attempt),
    )
