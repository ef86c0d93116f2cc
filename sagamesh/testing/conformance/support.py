"""What a conformance test needs besides the collector: broker clients, names, restarts."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import pytest

from ...brokers.base import Broker, Capabilities
from ...message import Message

BrokerFactory = Callable[[], Awaitable[Broker]]
"""Returns a fresh, NOT yet connected broker client; a test may create several."""


@dataclass(slots=True)
class Restartable:
    """A broker the suite may restart (a private server on its own port).

    ``factory`` makes clients of that server; ``restart()`` stops the server and starts it
    again with the same data (returns once it accepts connections again).
    """

    factory: BrokerFactory
    restart: Callable[[], Awaitable[None]]


class BrokerPool:
    """Connected clients of one test; all closed at teardown."""

    def __init__(self, factory: BrokerFactory) -> None:
        self._factory = factory
        self._brokers: list[Broker] = []

    async def connect(self) -> Broker:
        broker = await self._factory()
        self._brokers.append(broker)
        await broker.connect()
        return broker

    async def close(self) -> None:
        for broker in reversed(self._brokers):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(broker.close(), 30)
        self._brokers.clear()


class Names:
    """Unique topic and group names so runs on a shared broker never see each other."""

    def __init__(self) -> None:
        self.run = uuid.uuid4().hex[:10]

    def topic(self, label: str) -> str:
        return f"conformance.{label}.{self.run}"

    def group(self, label: str = "g") -> str:
        return f"conformance-{label}-{self.run}"


def require(capabilities: Capabilities, name: str, broker: Broker) -> None:
    """Skip the calling case, naming the capability that excludes it."""
    if not getattr(capabilities, name):
        pytest.skip(f"{broker.name}: capability {name}=False excludes this case")


def new_id() -> str:
    return str(uuid.uuid4())


def messages(topic: str, count: int, *, keys: int = 1, prefix: str = "m") -> list[Message]:
    """``count`` messages spread round-robin over ``keys`` keys; body carries the sequence."""
    return [
        Message(id=new_id(), topic=topic, key=f"{prefix}-key-{i % keys}",
                headers={"seq": str(i)}, body=f"{prefix}:{i}".encode())
        for i in range(count)
    ]


def ids(batch: Sequence[Message]) -> set[str]:
    return {m.id for m in batch}


async def publish_all(broker: Broker, batch: Sequence[Message]) -> None:
    """publish_many and fail the test with the first error if any message was not confirmed."""
    results = await broker.publish_many(batch)
    assert len(results) == len(batch), f"publish_many returned {len(results)} results " \
                                       f"for {len(batch)} messages"
    failed = [(m.id, r) for m, r in zip(batch, results, strict=True) if r is not None]
    assert not failed, f"{len(failed)} of {len(batch)} not confirmed; first: {failed[0]!r}"
