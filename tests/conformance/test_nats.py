"""The conformance suite on NATS JetStream: the shared server, and a private one to restart."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from sagamesh_nats import NatsBroker

from sagamesh.testing.conformance import BrokerConformance, BrokerFactory, Restartable
from sagamesh.testing.services import (
    free_port,
    nats_server_binary,
    service_unavailable,
    wait_port,
)

pytestmark = pytest.mark.nats

# Fast failure detection for tests: a restart is noticed within ~2 s.
FAST = {"reconnect_time_wait": 0.1, "idle_heartbeat": 0.5, "pull_expires": 5.0,
        "publish_timeout": 10.0, "lease_ttl": 2.0}


@pytest.fixture(scope="session")
def stream_prefix() -> str:
    """Streams of this session share a unique prefix; they are deleted at the end."""
    return f"SMT{uuid.uuid4().hex[:8]}_"


@pytest_asyncio.fixture(loop_scope="function")
async def _cleanup_streams(nats_url: str, stream_prefix: str) -> AsyncIterator[None]:
    yield
    import nats

    nc = await nats.connect(nats_url)
    try:
        jsm = nc.jsm()
        ours = (stream_prefix, f"KV_{stream_prefix}")  # streams and the lease bucket
        for info in await jsm.streams_info():
            if info.config.name and info.config.name.startswith(ours):
                await jsm.delete_stream(info.config.name)
    finally:
        await nc.close()


class NatsServer:
    """A private nats-server with JetStream on its own port and store directory."""

    def __init__(self, binary: str, store: Path) -> None:
        self.binary = binary
        self.store = store
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd",
             str(self.store)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_port("127.0.0.1", self.port, 20):
            self.stop()
            raise RuntimeError(f"nats-server did not listen on {self.port}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()  # graceful: JetStream flushes its store
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[NatsServer]:
    binary = nats_server_binary()
    if binary is None:
        service_unavailable("nats-server binary not found (needed for the restart case)")
    server = NatsServer(binary, tmp_path / "jetstream")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.usefixtures("_cleanup_streams")
class TestNatsConformance(BrokerConformance):
    @pytest.fixture
    def broker_factory(self, nats_url: str, stream_prefix: str) -> BrokerFactory:
        async def factory() -> NatsBroker:
            return NatsBroker(nats_url, stream_prefix=stream_prefix, **FAST)

        return factory  # type: ignore[return-value]

    @pytest.fixture
    def restartable(self, private_nats: NatsServer) -> Restartable:
        async def factory() -> NatsBroker:
            return NatsBroker(private_nats.url, **FAST)

        async def restart() -> None:
            await asyncio.to_thread(private_nats.restart)

        return Restartable(factory=factory, restart=restart)  # type: ignore[arg-type]
