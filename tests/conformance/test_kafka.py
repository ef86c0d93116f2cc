"""The conformance suite on Kafka (a private tansu broker: Kafka protocol, memory storage).

Restart case: tansu here keeps topics in memory, so a restarted tansu process comes back empty
and every confirmed-but-unconsumed message is gone with it; "nothing lost" across a *process*
restart cannot hold on this broker, whatever the client does. The conformance restart therefore
cuts the broker off the network instead: the clients reach tansu through a TCP proxy (tansu
advertises the proxy's address), and ``restart()`` severs every connection and refuses new ones
for a while, exactly what clients see of a broker restart, while the broker keeps its data. A
real tansu process restart (clients reconnect and carry on) is tested in
``tests/adapters/test_kafka.py``.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from sagamesh_kafka import KafkaBroker

from sagamesh.testing.conformance import BrokerConformance, BrokerFactory, Restartable
from sagamesh.testing.services import (
    free_port,
    service_unavailable,
    tansu_binary,
    wait_port,
)
from sagamesh.testing.tcpproxy import TcpProxy

pytestmark = pytest.mark.kafka

# Group joins dominate Kafka test time: short heartbeats make rebalances quick.
FAST: dict[str, Any] = {
    "session_timeout": 2.5,
    "heartbeat_interval": 0.2,
    "rebalance_timeout": 3.0,
    "revoke_timeout": 2.0,
    "transaction_probe_timeout": 3.0,
}
OUTAGE = 1.5  # seconds the proxied broker refuses connections per "restart"


def _tansu_behind(proxy_port: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(
        [tansu_binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{port}",
         "--advertised-listener-url", f"tcp://127.0.0.1:{proxy_port}",
         "--storage-engine", "memory://tansu/", "--silent"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_port("127.0.0.1", port, 20):
        process.kill()
        raise RuntimeError("tansu did not listen")
    return process, port


class TestKafkaConformance(BrokerConformance):
    @pytest.fixture
    def broker_factory(self, kafka_bootstrap: str) -> BrokerFactory:
        async def factory() -> KafkaBroker:
            return KafkaBroker(f"kafka://{kafka_bootstrap}", **FAST)

        return factory  # type: ignore[return-value]

    @pytest_asyncio.fixture
    async def restartable(self) -> AsyncIterator[Restartable]:
        proxy_port = free_port()
        try:
            process, port = await asyncio.to_thread(_tansu_behind, proxy_port)
        except Exception as exc:
            service_unavailable(f"cannot start a private tansu: {exc}")
        proxy = await TcpProxy("127.0.0.1", port, port=proxy_port).start()

        async def factory() -> KafkaBroker:
            return KafkaBroker(f"kafka://127.0.0.1:{proxy_port}", **FAST)

        async def restart() -> None:
            await proxy.outage(OUTAGE)

        try:
            yield Restartable(factory=factory, restart=restart)  # type: ignore[arg-type]
        finally:
            await proxy.close()
            process.kill()  # tansu delays a SIGTERM while clients are connected
            await asyncio.to_thread(process.wait, 10)
