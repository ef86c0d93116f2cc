"""NATS adapter across a server restart (a private nats-server on its own port and store)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sagamesh_nats import NatsBroker

from sagamesh.testing.conformance import Collector, messages, publish_all
from sagamesh.testing.services import (
    free_port,
    nats_server_binary,
    service_unavailable,
    wait_port,
)

pytestmark = pytest.mark.nats

FAST: dict[str, Any] = {"reconnect_time_wait": 0.1, "idle_heartbeat": 0.5, "pull_expires": 5.0,
                        "lease_ttl": 2.0}


class PrivateNats:
    def __init__(self, binary: str, store: Path) -> None:
        self.command = [binary, "-a", "127.0.0.1", "-p", str(free_port()), "-js", "-sd",
                        str(store)]
        self.url = f"nats://127.0.0.1:{self.command[4]}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        if not wait_port("127.0.0.1", int(self.command[4]), 20):
            raise RuntimeError("nats-server did not start")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            process.wait(15)

    async def restart(self) -> None:
        await asyncio.to_thread(self.stop)
        await asyncio.to_thread(self.start)


async def _publish_until_confirmed(broker: NatsBroker, batch: list[Any]) -> None:
    """Publish again what failed while the server was away (Nats-Msg-Id de-duplicates)."""
    for _ in range(200):
        if await broker.publish_many(batch) == [None] * len(batch):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("publishing never succeeded after the restart")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateNats]:
    binary = nats_server_binary()
    if binary is None:
        service_unavailable("nats-server binary not found")
    nats_server = PrivateNats(binary, tmp_path / "js")
    nats_server.start()
    yield nats_server
    nats_server.stop()


async def test_ordered_group_keeps_key_order_across_a_restart(server: PrivateNats) -> None:
    async with NatsBroker(server.url, **FAST) as broker:
        collector = Collector()

        async def work(delivery: Any) -> None:
            await asyncio.sleep(0.005)

        sub = await broker.subscribe("restart.ordered", collector.handler(on_message=work),
                                     group="g", ordered=True, max_in_flight=32)
        assert sub.active
        batch = messages("restart.ordered", 3000, keys=30)
        await publish_all(broker, batch[:1500])
        await collector.wait_until(lambda: len(collector.acked) >= 500, "500 acks", 60)
        assert len(collector.acked_ids()) < 1500, "the restart must come mid-stream"
        await server.restart()
        for start in range(1500, 3000, 250):  # publishing resumes once reconnected
            await _publish_until_confirmed(broker, batch[start:start + 250])
        await collector.wait_acked({m.id for m in batch}, 120)
        assert sub.active
        position = {m.id: i for i, m in enumerate(batch)}
        first_acks: dict[str | None, list[int]] = {}
        seen: set[str] = set()
        for record in collector.acked:  # a lost ack means a later duplicate, never a reorder
            if record.message.id not in seen:
                seen.add(record.message.id)
                first_acks.setdefault(record.message.key, []).append(
                    position[record.message.id])
        for key, order in first_acks.items():
            assert order == sorted(order), f"key {key} out of order"
            assert len(order) == 100


async def test_ephemeral_subscription_continues_after_a_restart(server: PrivateNats) -> None:
    async with NatsBroker(server.url, **FAST) as broker:
        collector = Collector()
        await broker.subscribe("restart.eph", collector.handler())  # group=None
        before = messages("restart.eph", 200)
        await publish_all(broker, before)
        await collector.wait_acked({m.id for m in before}, 60)
        await server.restart()
        after = messages("restart.eph", 200, prefix="after")
        await _publish_until_confirmed(broker, after)
        await collector.wait_acked({m.id for m in after}, 60, "messages after the restart")
        assert not collector.received_ids() - {m.id for m in before + after}
