"""The Outbox contract on MemoryOutbox, and the relay's ordering and retry behaviour."""

from __future__ import annotations

import asyncio

import pytest

from sagamesh.brokers.memory import MemoryBroker
from sagamesh.errors import TransactionError
from sagamesh.message import Message
from sagamesh.publishing import MemoryOutbox, Outbox, OutboxRelay
from sagamesh.retry import FixedDelayRetryPolicy
from sagamesh.testing.faults import FaultyBroker

from .conftest import collect


def msg(n: int, key: str) -> Message:
    return Message(id=f"m{n}", topic="t", key=key, body=str(n).encode())


async def test_memory_outbox_meets_the_protocol() -> None:
    outbox = MemoryOutbox()
    assert isinstance(outbox, Outbox)
    await outbox.add("tx-1", [msg(1, "a"), msg(2, "a")])
    await outbox.add("tx-2", [msg(3, "b")])
    records = await outbox.pending(10)
    assert [(r.id, r.tx_id, r.message.id) for r in records] == [
        (1, "tx-1", "m1"), (2, "tx-1", "m2"), (3, "tx-2", "m3")]
    assert [r.id for r in await outbox.pending(2)] == [1, 2]
    await outbox.mark_sent([1, 3])
    assert [r.id for r in await outbox.pending(10)] == [2]
    await outbox.mark_sent([1])  # already sent: a no-op
    assert (outbox.added, outbox.sent, len(outbox)) == (3, 2, 1)


async def test_add_is_all_or_nothing() -> None:
    outbox = MemoryOutbox()
    with pytest.raises(TransactionError):
        await outbox.add("tx", [msg(1, "a"), "not a message"])  # type: ignore[list-item]
    assert len(outbox) == 0 and outbox.added == 0


async def test_relay_sends_in_order_per_key_and_pipelines_across_keys() -> None:
    class Recording(MemoryBroker):
        calls: list[list[str]] = []

        async def publish_many(self, messages):  # type: ignore[no-untyped-def]
            self.calls.append([m.id for m in messages])
            return await super().publish_many(messages)

    async with Recording() as broker:
        outbox = MemoryOutbox()
        await outbox.add("tx-1", [msg(1, "a"), msg(2, "a"), msg(3, "b")])
        await outbox.add("tx-2", [msg(4, "c"), msg(5, "b")])
        relay = OutboxRelay(outbox, broker)
        assert await relay.run_once() == (5, 0)
        assert broker.calls == [["m1", "m3", "m4"], ["m2", "m5"]]
        assert [m.id for m in broker._topics["t"].log] == ["m1", "m3", "m4", "m2", "m5"]
        assert len(outbox) == 0


async def test_a_failure_blocks_its_key_until_the_next_round() -> None:
    inner = MemoryBroker()
    fail_once = {"m1"}

    def poison(m: Message) -> bool:
        if m.id in fail_once:
            fail_once.discard(m.id)
            return True
        return False

    async with FaultyBroker(inner, fail_when=poison) as broker:
        outbox = MemoryOutbox()
        await outbox.add("tx", [msg(1, "a"), msg(2, "a"), msg(3, "b"), msg(4, "b")])
        relay = OutboxRelay(outbox, broker)
        assert await relay.run_once() == (2, 1)  # m3, m4 sent; m1 failed so m2 waits
        assert [r.message.id for r in await outbox.pending(10)] == ["m1", "m2"]
        assert await relay.run_once() == (2, 0)
        assert [m.id for m in inner._topics["t"].log] == ["m3", "m4", "m1", "m2"]


async def test_background_relay_wakes_on_notify_and_backs_off_on_failure() -> None:
    inner = MemoryBroker()
    async with FaultyBroker(inner, fail_first=3) as broker:
        seen = await collect(inner, "t")
        outbox = MemoryOutbox()
        sleeps: list[float] = []

        async def sleep(delay: float) -> None:
            sleeps.append(delay)
            await asyncio.sleep(0)

        relay = OutboxRelay(outbox, broker, poll_interval=60.0,
                            retry_policy=FixedDelayRetryPolicy(100, 0.5), sleep=sleep)
        relay.start()
        await outbox.add("tx", [msg(1, "a"), msg(2, "a")])
        relay.notify()
        await seen.wait_for(2, within=5.0)
        assert seen.ids == ["m1", "m2"]
        assert sleeps == [0.5, 0.5, 0.5] and relay.failed_attempts == 3
        await relay.close()
        with pytest.raises(RuntimeError):
            relay.start()


async def test_on_notify_hook_of_a_store_is_wired_to_the_relay() -> None:
    class NotifyingOutbox(MemoryOutbox):
        def __init__(self) -> None:
            super().__init__()
            self.callbacks: list[object] = []

        def on_notify(self, callback: object) -> None:
            self.callbacks.append(callback)

    outbox = NotifyingOutbox()
    relay = OutboxRelay(outbox, MemoryBroker())
    assert outbox.callbacks == [relay.notify]


async def test_close_gives_up_draining_after_its_deadline() -> None:
    async with FaultyBroker(MemoryBroker(), fail_first=10**6) as broker:
        outbox = MemoryOutbox()
        await outbox.add("tx", [msg(1, "a")])
        relay = OutboxRelay(outbox, broker, retry_policy=FixedDelayRetryPolicy(10**6, 0.01))
        relay.start()
        await relay.close(drain=True, drain_within=0.1)
        assert len(outbox) == 1 and broker.attempts >= 2


async def test_a_never_started_relay_does_not_touch_its_store() -> None:
    class Watched(MemoryOutbox):
        calls = 0

        async def pending(self, limit: int):  # type: ignore[no-untyped-def]
            self.calls += 1
            return await super().pending(limit)

    outbox = Watched()
    await OutboxRelay(outbox, MemoryBroker()).close()
    assert outbox.calls == 0


async def test_publisher_start_relays_what_a_previous_process_left() -> None:
    from sagamesh.publishing import PublisherConfig, SagaEventPublisher

    outbox = MemoryOutbox()
    await outbox.add("tx-from-before-the-crash", [msg(1, "a"), msg(2, "a")])
    async with MemoryBroker() as broker:
        seen = await collect(broker, "t")
        async with SagaEventPublisher(broker, PublisherConfig(outbox=outbox)):
            await seen.wait_for(2)
        assert seen.ids == ["m1", "m2"] and outbox.sent == 2
