"""Helpers for the consume-side tests: events, publishing on the memory broker, waiting."""

from __future__ import annotations

import asyncio

from sagamesh.brokers.base import Delivery
from sagamesh.brokers.memory import MemoryBroker
from sagamesh.events import EventType, SagaEvent
from sagamesh.message import Message
from sagamesh.serialization import get_serializer, to_message

TOPIC = "saga.events"
DLQ = "saga.dlq"


def event(saga_id: str = "s1", type: EventType = EventType.SAGA_STARTED, **kw: object) -> SagaEvent:
    return SagaEvent(saga_id=saga_id, type=type, **kw)  # type: ignore[arg-type]


def message(ev: SagaEvent, topic: str = TOPIC, serializer: str = "json") -> Message:
    return to_message(ev, topic, get_serializer(serializer))


async def publish(broker: MemoryBroker, *events: SagaEvent, topic: str = TOPIC) -> None:
    await broker.publish_many([message(e, topic) for e in events])


class Signal:
    """Counts calls; ``wait(n)`` blocks until ``n`` were seen (event-driven, bounded)."""

    def __init__(self) -> None:
        self.count = 0
        self._changed = asyncio.Event()

    def hit(self, n: int = 1) -> None:
        self.count += n
        self._changed.set()

    async def wait(self, n: int, within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            while self.count < n:
                self._changed.clear()
                await self._changed.wait()


class Collector:
    """Subscribes to a topic and records every message; ``wait(n)`` blocks until n arrived."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._changed = asyncio.Event()

    async def __call__(self, delivery: Delivery) -> None:
        self.messages.append(delivery.message)
        await delivery.ack()
        self._changed.set()

    async def wait(self, n: int, within: float = 10.0) -> list[Message]:
        async with asyncio.timeout(within):
            while len(self.messages) < n:
                self._changed.clear()
                await self._changed.wait()
        return self.messages


async def turns_until(cond: object, max_turns: int = 200_000) -> None:
    """Yield to the loop until ``cond()`` holds (in-process work only; bounded, no sleeping)."""
    assert callable(cond)
    for _ in range(max_turns):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


async def poll_until(cond: object, within: float = 10.0, every: float = 0.005) -> None:
    """Wait (bounded) for a condition driven by timers elsewhere, e.g. a background task."""
    assert callable(cond)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    for _ in range(1_000_000):
        if cond():
            return
        if loop.time() > deadline:
            break
        await asyncio.sleep(every)
    raise AssertionError(f"condition not reached within {within}s")
