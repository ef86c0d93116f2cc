"""The conformance suite on the embedded memory broker.

One ``MemoryBroker`` is one broker *server*; the suite opens several clients per test, so each
client here is a view of one shared in-process broker with its own connection state and
subscriptions (exactly how several components of one process share the memory broker).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager

import pytest
import pytest_asyncio

from sagamesh.brokers.base import (
    BrokerTransaction,
    Delivery,
    Health,
    MessageHandler,
    Subscription,
)
from sagamesh.brokers.memory import MemoryBroker
from sagamesh.errors import BrokerUnavailableError
from sagamesh.message import Message
from sagamesh.testing.conformance import BrokerConformance, BrokerFactory, Collector


class MemoryClient:
    """A client of a shared MemoryBroker: closing it closes only its own subscriptions."""

    name = "memory"

    def __init__(self, server: MemoryBroker) -> None:
        self._server = server
        self.capabilities = server.capabilities
        self._subs: list[Subscription] = []
        self._connected = False

    async def connect(self) -> None:
        await self._server.connect()
        self._connected = True

    async def close(self) -> None:
        self._connected = False
        subs, self._subs = self._subs, []
        await asyncio.gather(*(s.close() for s in subs))

    async def __aenter__(self) -> MemoryClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _require(self) -> None:
        if not self._connected:
            raise BrokerUnavailableError("memory client is closed")

    async def publish(self, message: Message) -> None:
        self._require()
        await self._server.publish(message)

    async def publish_many(self, messages: Sequence[Message]) -> list[Exception | None]:
        self._require()
        return await self._server.publish_many(messages)

    def transaction(self) -> AbstractAsyncContextManager[BrokerTransaction]:
        self._require()
        return self._server.transaction()

    async def subscribe(self, topic: str, handler: MessageHandler, *, group: str | None = None,
                        max_in_flight: int = 64, ordered: bool = False) -> Subscription:
        self._require()
        sub = await self._server.subscribe(topic, handler, group=group,
                                           max_in_flight=max_in_flight, ordered=ordered)
        self._subs.append(sub)
        return sub

    async def health(self) -> Health:
        if not self._connected:
            return Health(healthy=False, broker=self.name, detail="closed")
        return await self._server.health()


@pytest_asyncio.fixture
async def memory_server() -> AsyncIterator[MemoryBroker]:
    server = MemoryBroker()
    yield server
    await server.close()


class TestMemoryConformance(BrokerConformance):
    @pytest.fixture
    def broker_factory(self, memory_server: MemoryBroker) -> BrokerFactory:
        async def factory() -> MemoryClient:
            return MemoryClient(memory_server)

        return factory  # type: ignore[return-value]


async def test_memory_broker_itself_closes_idempotently_and_finally() -> None:
    """The client view above delegates; the broker object's own lifecycle obeys the contract."""
    broker = MemoryBroker()
    await broker.connect()
    assert (await broker.health()).healthy
    await asyncio.gather(broker.close(), broker.close())
    await broker.close()
    assert not (await broker.health()).healthy
    with pytest.raises(BrokerUnavailableError):
        await broker.publish(Message(id="1", topic="t"))
    with pytest.raises(BrokerUnavailableError):
        await broker.subscribe("t", _ack)


async def _ack(delivery: object) -> None:
    return None


async def test_memory_delayed_nack_survives_broker_close() -> None:
    """A message waiting out its nack delay when the broker closes is redelivered later."""
    broker = MemoryBroker()
    await broker.connect()

    async def nack_long(delivery: Delivery) -> None:
        await delivery.nack(delay=3600)

    first = Collector()
    await broker.subscribe("t", first.handler(on_message=nack_long), group="g")
    await broker.publish(Message(id="m1", topic="t", key="k"))
    await first.wait_until(lambda: first.attempts_of("m1") == [1], "first delivery", 10)
    await broker.close()
    await broker.connect()
    collector = Collector()
    await broker.subscribe("t", collector.handler(), group="g")
    await collector.wait_acked({"m1"}, 10)
    assert collector.attempts_of("m1") == [2]
    await broker.close()


async def test_memory_wakeup_not_lost_when_woken_member_closes() -> None:
    """A publish that wakes a member which is closing at that moment still reaches another."""
    broker = MemoryBroker()
    await broker.connect()
    closing = Collector()
    other = Collector()
    s1 = await broker.subscribe("t", closing.handler(), group="g")
    await asyncio.sleep(0)  # s1's pump waits first
    await broker.subscribe("t", other.handler(), group="g")
    await asyncio.sleep(0)
    await broker.publish(Message(id="m1", topic="t"))  # wakes s1 ...
    await s1.close()  # ... which closes before it could take the message
    await other.wait_acked({"m1"}, 5)
    assert not closing.received
    await broker.close()
