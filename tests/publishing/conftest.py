"""Shared helpers for publisher tests: events, a collecting subscriber, fake time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from itertools import count

import pytest

from sagamesh.brokers.base import Delivery
from sagamesh.brokers.memory import MemoryBroker
from sagamesh.events import EventType, SagaEvent
from sagamesh.message import Message

_ids = count(1)


def make_event(saga_id: str = "saga-1", type: EventType = EventType.SAGA_STEP_COMPLETED,
               **fields: object) -> SagaEvent:
    n = next(_ids)
    return SagaEvent(id=f"evt-{n}", saga_id=saga_id, type=type, step_id=f"step-{n}",
                     data={"n": n}, **fields)  # type: ignore[arg-type]


class Collector:
    """Subscribes and lets a test wait (event-driven) until n messages arrived."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._changed = asyncio.Event()

    async def __call__(self, delivery: Delivery) -> None:
        self.messages.append(delivery.message)
        await delivery.ack()
        self._changed.set()

    @property
    def ids(self) -> list[str]:
        return [m.id for m in self.messages]

    async def wait_for(self, n: int, within: float = 10.0) -> list[Message]:
        async with asyncio.timeout(within):
            while len(self.messages) < n:
                self._changed.clear()
                await self._changed.wait()
        return self.messages


class FakeTime:
    """A clock and a sleep that advances it: backoff waits are recorded, not waited."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay
        await asyncio.sleep(0)


@pytest.fixture
async def broker() -> AsyncIterator[MemoryBroker]:
    async with MemoryBroker() as b:
        yield b


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


async def collect(broker: object, topic: str, group: str = "test") -> Collector:
    collector = Collector()
    await broker.subscribe(topic, collector, group=group, ordered=True)  # type: ignore[attr-defined]
    return collector
