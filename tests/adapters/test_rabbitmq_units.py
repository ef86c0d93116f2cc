"""ConfirmingPublisher's own logic, on fakes of the robust channel (no RabbitMQ involved)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sagamesh_rabbitmq._publish import ConfirmingPublisher

from sagamesh.errors import PublishTimeoutError


class FakeUnderlay:
    """An aiormq channel: ``fail`` publishes raise ConnectionError, yet it never reports
    itself closed (the state right after a connection dies, before aiormq notices)."""

    def __init__(self, fail: int = 0, hang: bool = False) -> None:
        self.fail = fail
        self.hang = hang
        self.published: list[bytes] = []
        self.is_closed = False

    async def basic_publish(self, body: bytes, **_: Any) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("connection reset")
        if self.hang:
            await asyncio.Event().wait()
        self.published.append(body)


class FakeRobustChannel:
    def __init__(self, *underlays: FakeUnderlay) -> None:
        self.underlays = list(underlays)
        self.asked = 0

    async def ready(self) -> None:
        return None

    async def get_underlay_channel(self) -> FakeUnderlay:
        self.asked += 1
        return self.underlays.pop(0)


class Props:
    message_id = "m-1"


def _publisher(channel: FakeRobustChannel, timeout: float = 5.0) -> ConfirmingPublisher:
    return ConfirmingPublisher(channel, timeout=timeout, window=8,  # type: ignore[arg-type]
                               mandatory=False)


async def test_the_open_channel_is_kept_between_publishes() -> None:
    first = FakeUnderlay()
    channel = FakeRobustChannel(first)
    publisher = _publisher(channel)
    for body in (b"a", b"b", b"c"):
        await publisher.publish("x", "t", body, Props())  # type: ignore[arg-type]
    assert channel.asked == 1 and first.published == [b"a", b"b", b"c"]


async def test_a_failed_try_asks_for_the_channel_again_though_it_looks_open() -> None:
    dead, fresh = FakeUnderlay(fail=1), FakeUnderlay()
    channel = FakeRobustChannel(dead, fresh)
    publisher = _publisher(channel)
    await publisher.publish("x", "t", b"a", Props())  # type: ignore[arg-type]
    assert channel.asked == 2 and fresh.published == [b"a"] and publisher.retries == 1


async def test_a_confirm_that_never_comes_ends_at_the_deadline() -> None:
    channel = FakeRobustChannel(FakeUnderlay(hang=True))
    publisher = _publisher(channel, timeout=0.2)
    # the outer limit turns a deadline that never fires into a failure, not a hang
    with pytest.raises(PublishTimeoutError, match="did not confirm message m-1"):
        async with asyncio.timeout(5):
            await publisher.publish("x", "t", b"a", Props())  # type: ignore[arg-type]
    assert await publisher.drain(1.0)  # nothing left in flight
