"""FaultyBroker does exactly the faults it is asked for, and counts them."""

from __future__ import annotations

import pytest

from sagamesh.brokers.memory import MemoryBroker
from sagamesh.errors import BrokerUnavailableError
from sagamesh.message import Message
from sagamesh.testing.faults import FaultyBroker


def msgs(n: int) -> list[Message]:
    return [Message(id=f"m{i}", topic="t", key="k") for i in range(n)]


async def test_fail_first_then_pass() -> None:
    inner = MemoryBroker()
    async with FaultyBroker(inner, fail_first=2) as broker:
        results = await broker.publish_many(msgs(5))
        assert [type(r).__name__ if r else None for r in results] == [
            "BrokerUnavailableError", "BrokerUnavailableError", None, None, None]
        await broker.publish(Message(id="x", topic="t"))
        assert (broker.attempts, broker.failures, broker.confirmed, inner.published) == (6, 2, 4, 4)
        assert broker.confirmed_ids == ["m2", "m3", "m4", "x"]


async def test_drop_connection_and_reconnect() -> None:
    async with FaultyBroker(MemoryBroker(), drop_connection_after=2) as broker:
        await broker.publish(Message(id="a", topic="t"))
        await broker.publish(Message(id="b", topic="t"))
        assert not (await broker.health()).healthy and broker.drops == 1
        for _ in range(3):
            with pytest.raises(BrokerUnavailableError, match="connection dropped"):
                await broker.publish(Message(id="c", topic="t"))
        broker.reconnect()
        await broker.publish(Message(id="c", topic="t"))
        assert broker.failures_by_id["c"] == 3 and broker.attempts_by_id["c"] == 4
        assert (await broker.health()).healthy


async def test_native_transactions_override() -> None:
    inner = MemoryBroker()
    assert FaultyBroker(inner).capabilities.native_transactions is True
    off = FaultyBroker(inner, native_transactions=False)
    assert off.capabilities.native_transactions is False
    async with off:
        with pytest.raises(BrokerUnavailableError):
            async with off.transaction():
                pass
