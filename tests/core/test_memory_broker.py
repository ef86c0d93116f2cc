"""Memory-broker specifics beyond the shared conformance suite: retention, queued counts,
unordered nack delay, transactions."""

from __future__ import annotations

import asyncio

import pytest

from sagamesh.brokers.base import Delivery
from sagamesh.errors import BrokerUnavailableError
from sagamesh.message import Message


def msg(i: int, topic: str = "t", key: str | None = None) -> Message:
    return Message(id=str(i), topic=topic, key=key, body=str(i).encode())


async def test_publish_requires_connect() -> None:
    from sagamesh.brokers import MemoryBroker

    broker = MemoryBroker()
    with pytest.raises(BrokerUnavailableError):
        await broker.publish(msg(1))


async def test_retention_bounds_replay_for_new_groups() -> None:
    from sagamesh.brokers import MemoryBroker

    async with MemoryBroker(retention=5) as broker:
        await broker.publish_many([msg(i) for i in range(20)])
        got: list[str] = []
        done = asyncio.Event()

        async def handler(d: Delivery) -> None:
            got.append(d.message.id)
            if len(got) == 5:
                done.set()

        await broker.subscribe("t", handler, group="late")
        await asyncio.wait_for(done.wait(), 5)
        assert got == [str(i) for i in range(15, 20)]


async def test_durable_group_accumulates_while_unsubscribed() -> None:
    from sagamesh.brokers import MemoryBroker

    async with MemoryBroker() as broker:
        sub = await broker.subscribe("t", lambda d: d.ack(), group="g")
        await sub.close()
        await broker.publish_many([msg(i) for i in range(7)])
        assert broker.queued("t", "g") == 7


async def test_nack_with_delay_unordered_lets_others_pass() -> None:
    from sagamesh.brokers import MemoryBroker

    async with MemoryBroker() as broker:
        order: list[tuple[str, int]] = []
        done = asyncio.Event()

        async def handler(d: Delivery) -> None:
            order.append((d.message.id, d.attempt))
            if d.message.id == "0" and d.attempt == 1:
                await d.nack(delay=0.05)
            if len(order) == 4:
                done.set()

        await broker.publish_many([msg(i, key="same") for i in range(3)])
        await broker.subscribe("t", handler, group="g", max_in_flight=1)
        await asyncio.wait_for(done.wait(), 5)
        assert order[:3] == [("0", 1), ("1", 1), ("2", 1)]
        assert order[3] == ("0", 2)


async def test_transaction_visible_only_on_commit() -> None:
    from sagamesh.brokers import MemoryBroker

    async with MemoryBroker() as broker:
        sub = await broker.subscribe("t", lambda d: d.ack(), group="g")
        await sub.close()
        async with broker.transaction() as tx:
            await tx.publish(msg(1))
            await tx.publish(msg(2))
            assert broker.queued("t", "g") == 0
        assert broker.queued("t", "g") == 2
        with pytest.raises(RuntimeError):
            async with broker.transaction() as tx:
                await tx.publish(msg(3))
                raise RuntimeError("rollback")
        assert broker.queued("t", "g") == 2
