"""A fault-injecting wrapper around any Broker, for tests that must prove failure handling.

Faults apply per message *attempt* (``publish`` is one attempt, ``publish_many`` one per
message), in this order: a dropped connection, ``fail_first``, ``fail_every``, ``fail_when``;
a message that passes them is held for ``confirm_delay`` and then given to the inner broker.
Counters say exactly what happened, so tests assert numbers, not "no exception".
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from ..brokers.base import (
    Broker,
    BrokerTransaction,
    Capabilities,
    Health,
    MessageHandler,
    Subscription,
    TransactionalBroker,
)
from ..errors import BrokerUnavailableError
from ..message import Message


class FaultyBroker:
    """Wraps ``inner``; every fault is off by default.

    - ``fail_first=N``: the first N attempts raise ``BrokerUnavailableError``.
    - ``fail_every=K``: every K-th attempt (K, 2K, ...) fails.
    - ``fail_when(message)``: attempts for which it returns True fail (e.g. poison ids).
    - ``confirm_delay``: seconds each confirm is held (drives per-attempt timeouts).
    - ``drop_connection_after=N``: after N confirmed messages the connection drops; attempts
      fail until ``reconnect()`` is called or ``reconnect_after`` failed attempts have passed.
    - ``native_transactions``: override the inner broker's capability (False forces the
      publisher onto its outbox path).
    """

    def __init__(
        self,
        inner: Broker,
        *,
        fail_first: int = 0,
        fail_every: int = 0,
        fail_when: Callable[[Message], bool] | None = None,
        confirm_delay: float = 0.0,
        drop_connection_after: int | None = None,
        reconnect_after: int | None = None,
        native_transactions: bool | None = None,
        error: Callable[[str], BaseException] = BrokerUnavailableError,
    ) -> None:
        self.inner = inner
        self.name = f"faulty-{inner.name}"
        self.fail_first = fail_first
        self.fail_every = fail_every
        self.fail_when = fail_when
        self.confirm_delay = confirm_delay
        self.drop_connection_after = drop_connection_after
        self.reconnect_after = reconnect_after
        self._error = error
        caps = inner.capabilities
        if native_transactions is not None:
            caps = replace(caps, native_transactions=native_transactions
                           and isinstance(inner, TransactionalBroker))
        self.capabilities: Capabilities = caps
        # Counters.
        self.attempts = 0
        self.failures = 0
        self.confirmed = 0
        self.delayed = 0
        self.drops = 0
        self.connected = True
        self._failed_while_down = 0
        self.attempts_by_id: Counter[str] = Counter()
        self.failures_by_id: Counter[str] = Counter()
        self.confirmed_ids: list[str] = []

    # -- faults --------------------------------------------------------------------------------
    def reconnect(self) -> None:
        self.connected = True
        self._failed_while_down = 0

    def _fault(self, message: Message) -> BaseException | None:
        self.attempts += 1
        n = self.attempts
        self.attempts_by_id[message.id] += 1
        reason: str | None = None
        if not self.connected:
            self._failed_while_down += 1
            if self.reconnect_after is not None and self._failed_while_down > self.reconnect_after:
                self.reconnect()
            else:
                reason = "connection dropped"
        if reason is None and n <= self.fail_first:
            reason = f"injected failure {n}/{self.fail_first}"
        if reason is None and self.fail_every and n % self.fail_every == 0:
            reason = f"injected failure (every {self.fail_every})"
        if reason is None and self.fail_when is not None and self.fail_when(message):
            reason = f"injected failure for {message.id}"
        if reason is None:
            return None
        self.failures += 1
        self.failures_by_id[message.id] += 1
        return self._error(reason)

    def _confirmed(self, message: Message) -> None:
        self.confirmed += 1
        self.confirmed_ids.append(message.id)
        after = self.drop_connection_after
        if after is not None and self.connected and self.confirmed == after:
            self.connected = False
            self.drops += 1

    async def _hold(self) -> None:
        if self.confirm_delay > 0:
            self.delayed += 1
            await asyncio.sleep(self.confirm_delay)

    # -- Broker protocol -----------------------------------------------------------------------
    async def connect(self) -> None:
        await self.inner.connect()

    async def close(self) -> None:
        await self.inner.close()

    async def __aenter__(self) -> FaultyBroker:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def publish(self, message: Message) -> None:
        error = self._fault(message)
        if error is not None:
            raise error
        await self._hold()
        await self.inner.publish(message)
        self._confirmed(message)

    async def publish_many(self, messages: Sequence[Message]) -> list[Exception | None]:
        results: list[Exception | None] = []
        passing: list[Message] = []
        for message in messages:
            error = self._fault(message)
            if error is not None and not isinstance(error, Exception):
                raise error
            results.append(error)
            if error is None:
                passing.append(message)
        if passing:
            await self._hold()
            inner_results = await self.inner.publish_many(passing)
            it = iter(inner_results)
            for index, result in enumerate(results):
                if result is None:
                    inner = next(it)
                    results[index] = inner
                    if inner is None:
                        self._confirmed(messages[index])
        return results

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[BrokerTransaction]:
        if not self.capabilities.native_transactions or not isinstance(self.inner,
                                                                       TransactionalBroker):
            raise BrokerUnavailableError(f"{self.name} has no native transactions")
        async with self.inner.transaction() as tx:
            yield _FaultyTransaction(self, tx)

    async def subscribe(
        self,
        topic: str,
        handler: MessageHandler,
        *,
        group: str | None = None,
        max_in_flight: int = 64,
        ordered: bool = False,
    ) -> Subscription:
        return await self.inner.subscribe(topic, handler, group=group,
                                          max_in_flight=max_in_flight, ordered=ordered)

    async def health(self) -> Health:
        inner = await self.inner.health()
        healthy = inner.healthy and self.connected
        return Health(healthy=healthy, broker=self.name,
                      detail=inner.detail if self.connected else "connection dropped (injected)")

    def __getattr__(self, name: str) -> Any:  # introspection helpers of the inner broker
        return getattr(self.inner, name)


class _FaultyTransaction:
    def __init__(self, broker: FaultyBroker, tx: BrokerTransaction) -> None:
        self._broker = broker
        self._tx = tx

    async def publish(self, message: Message) -> None:
        error = self._broker._fault(message)
        if error is not None:
            raise error
        await self._tx.publish(message)
