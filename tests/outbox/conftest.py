"""Helpers for outbox tests: a broker that fails some publishes, and a deduping consumer."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sagamesh.brokers.base import Delivery
from sagamesh.brokers.memory import MemoryBroker
from sagamesh.consuming.idempotency import MemoryIdempotencyStore
from sagamesh.errors import BrokerUnavailableError
from sagamesh.message import Message


class FlakyBroker:
    """A memory broker whose publishes fail at random (seeded): the relay must retry, keep
    per-key order, and never lose a message."""

    def __init__(self, inner: MemoryBroker, failure_rate: float, seed: int = 7) -> None:
        self.inner = inner
        self.name = "flaky"
        self.capabilities = inner.capabilities
        self._rng = random.Random(seed)
        self.failure_rate = failure_rate
        self.failures = 0

    async def publish(self, message: Message) -> None:
        (result,) = await self.publish_many([message])
        if result is not None:
            raise result

    async def publish_many(self, messages: Sequence[Message]) -> list[Exception | None]:
        out: list[Exception | None] = []
        ok: list[Message] = []
        for m in messages:
            if self._rng.random() < self.failure_rate:
                self.failures += 1
                out.append(BrokerUnavailableError("injected failure"))
            else:
                ok.append(m)
                out.append(None)
        await self.inner.publish_many(ok)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class DedupingConsumer:
    """Records every delivery and, through an idempotency store, each message id once."""

    def __init__(self) -> None:
        self.store = MemoryIdempotencyStore()
        self.deliveries: list[str] = []
        self.processed: dict[str, list[str]] = defaultdict(list)  # key -> ids in order
        self.changed = asyncio.Event()

    async def handle(self, delivery: Delivery) -> None:
        m = delivery.message
        self.deliveries.append(m.id)
        if not await self.store.contains(m.id):
            self.processed[m.key or ""].append(m.id)
            await self.store.add(m.id)
        self.changed.set()

    @property
    def unique(self) -> int:
        return sum(len(v) for v in self.processed.values())

    async def wait_for(self, count: int, within: float = 20.0) -> None:
        async with asyncio.timeout(within):
            while self.unique < count:
                self.changed.clear()
                await self.changed.wait()
