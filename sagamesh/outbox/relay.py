"""Starting a relay for a durable outbox: the publisher's relay, woken by commit notifications."""

from __future__ import annotations

from typing import Any

from ..brokers.base import Broker
from .postgres import PostgresOutbox
from .redis import RedisOutbox


def outbox_relay(
    outbox: PostgresOutbox | RedisOutbox, broker: Broker, *, start: bool = True, **options: Any
) -> Any:
    """An :class:`~sagamesh.publishing.outbox.OutboxRelay` over ``outbox`` (started when a loop
    runs and ``start``); a Postgres outbox wakes it on every commit (LISTEN/NOTIFY).

    ``options`` go to the relay (``batch_size``, ``poll_interval``, ``retry_policy``). Close it
    with ``await relay.close()`` (drains what is pending first).
    """
    from ..publishing.outbox import OutboxRelay

    relay = OutboxRelay(outbox, broker, **options)
    if isinstance(outbox, PostgresOutbox):
        outbox.on_notify(relay.notify)
    if start:
        relay.start()
    return relay
