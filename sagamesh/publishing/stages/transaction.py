"""Commits a transaction: natively when the broker has transactions, else via the outbox."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ...brokers.base import Broker, TransactionalBroker
from ...errors import TransactionError
from ..outbox import OutboxRelay
from ..stage import CallNext, Publication


def has_native_transactions(broker: Broker) -> bool:
    return bool(broker.capabilities.native_transactions) and isinstance(
        broker, TransactionalBroker)


class TransactionStage:
    """Last stage. Non-transactional publications pass straight to the broker sink.

    Native: every message is published inside ``broker.transaction()`` and becomes visible
    at its commit. Outbox: the messages are stored all-or-none and the relay publishes them.
    """

    name = "transaction"
    __slots__ = ("broker", "fallback", "relay")

    def __init__(self, broker: Broker, relay: OutboxRelay | None = None, *,
                 fallback: Callable[[], OutboxRelay] | None = None) -> None:
        """``relay``: always use this outbox. Else each commit is native when the broker has
        transactions by then, or goes through the relay ``fallback`` makes (once)."""
        self.broker = broker
        self.relay = relay
        self.fallback = fallback

    def __call__(self, pub: Publication, call_next: CallNext) -> Awaitable[None]:
        tx_id = pub.transaction
        if tx_id is None:
            return call_next(pub)  # not a commit: no coroutine of this stage
        return self._commit(pub, tx_id)

    async def _commit(self, pub: Publication, tx_id: str) -> None:
        relay = self.relay
        broker = self.broker
        if relay is None and not has_native_transactions(broker):
            if self.fallback is None:
                raise TransactionError(f"{type(broker).__name__} has no native transactions "
                                       "and no outbox was given")
            relay = self.relay = self.fallback()
        if relay is None:
            assert isinstance(broker, TransactionalBroker)
            async with broker.transaction() as tx:
                for message in pub.messages:
                    await tx.publish(message)
        else:
            relay.start()
            await relay.outbox.add(tx_id, pub.messages)
            relay.notify()
        pub.results = [None] * len(pub.messages)
