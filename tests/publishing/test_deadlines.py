"""DeadlineQueue / finish_by: fixed-length deadlines served by one loop timer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sagamesh._eager import DeadlineQueue, finish_by
from sagamesh.brokers.base import Capabilities
from sagamesh.message import Message
from sagamesh.publishing import PublisherConfig, SagaEventPublisher

from .conftest import make_event


def answered_soon() -> asyncio.Future[None]:
    """A future set on the next loop turn, as a broker confirm that has to be waited for."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    loop.call_soon(future.set_result, None)
    return future


class CountingTimers:
    """Counts ``call_at`` on the running loop (``call_later`` goes through it too)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        loop = asyncio.get_running_loop()
        real = loop.call_at

        def call_at(when: float, callback: Any, *args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return real(when, callback, *args, **kwargs)

        monkeypatch.setattr(loop, "call_at", call_at)


async def test_awaits_that_finish_in_time_share_one_timer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deadlines = DeadlineQueue(5.0)
    timers = CountingTimers(monkeypatch)
    for _ in range(50):
        assert await finish_by(answered_soon(), deadlines) is False
    assert timers.count == 1
    assert len(deadlines) == 1  # finished entries are dropped as new ones come


async def test_only_the_unfinished_awaits_expire_each_after_its_own_limit() -> None:
    loop = asyncio.get_running_loop()
    deadlines = DeadlineQueue(0.05)
    unanswered: list[asyncio.Future[None]] = []

    async def wait(answered: bool) -> tuple[bool, float, float]:
        started = loop.time()
        if answered:
            confirm = answered_soon()
        else:
            confirm = loop.create_future()
            unanswered.append(confirm)
        expired = await finish_by(confirm, deadlines)
        return expired, started, loop.time()

    outcomes = []
    for answered in (True, False, True, False, True):
        outcomes.append(asyncio.ensure_future(wait(answered)))
        await asyncio.sleep(0.01)  # deadlines 10 ms apart
    results = await asyncio.gather(*outcomes)
    assert [expired for expired, _, _ in results] == [False, True, False, True, False]
    for expired, started, ended in results:
        if expired:
            assert ended - started >= 0.05 - 1e-3  # never early
    assert all(future.cancelled() for future in unanswered)


async def test_an_outside_cancellation_is_not_a_timeout() -> None:
    loop = asyncio.get_running_loop()
    deadlines = DeadlineQueue(5.0)
    task = asyncio.ensure_future(finish_by(loop.create_future(), deadlines))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await finish_by(answered_soon(), deadlines) is False


def test_a_queue_serves_one_event_loop_after_another() -> None:
    deadlines = DeadlineQueue(0.02)

    async def expire_one() -> bool:
        return await finish_by(asyncio.get_running_loop().create_future(), deadlines)

    assert asyncio.run(expire_one()) is True
    assert asyncio.run(expire_one()) is True


class SlowConfirmBroker:
    """Confirms every publish on the next loop turn (the first attempt always waits)."""

    name = "slow-confirm"
    capabilities = Capabilities(persistent=True, ordered_by_key=True, consumer_groups=False,
                                native_transactions=False, delayed_redelivery=False,
                                native_dead_letter=False)

    def __init__(self) -> None:
        self.published = 0

    async def publish(self, message: Message) -> None:
        await answered_soon()
        self.published += 1


async def test_first_publish_attempts_that_wait_share_one_timer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker = SlowConfirmBroker()
    publisher = SagaEventPublisher(broker, PublisherConfig(timeout=3.0))  # type: ignore[arg-type]
    timers = CountingTimers(monkeypatch)
    for _ in range(30):
        await publisher.publish_saga_event(make_event())
    assert broker.published == 30
    assert timers.count == 1
