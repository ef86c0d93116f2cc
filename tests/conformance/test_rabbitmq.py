"""The conformance suite on RabbitMQ (the shared server on loopback).

Every test gets its own exchange, so nothing it publishes reaches another test; the durable
queues the clients declared are deleted at teardown. The restart case runs the clients through
a TCP proxy and cuts every connection (refusing reconnects for a moment), which is what a
client sees when the server restarts; the shared server itself is never touched.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sagamesh_rabbitmq import RabbitBroker

from sagamesh.brokers.base import Broker
from sagamesh.testing.conformance import BrokerConformance, BrokerFactory, Restartable
from sagamesh.testing.services import host_port
from sagamesh.testing.tcpproxy import TcpProxy

pytestmark = pytest.mark.rabbitmq

OUTAGE = 0.5  # seconds the proxy refuses connections per simulated restart


async def _delete(amqp_url: str, exchange: str, queues: set[str]) -> None:
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        for name in sorted(queues):
            with contextlib.suppress(Exception):
                await channel.queue_delete(name)
        with contextlib.suppress(Exception):
            await channel.exchange_delete(exchange)
    finally:
        await connection.close()


class _Clients:
    """Makes RabbitBroker clients of one exchange and remembers what they declared."""

    def __init__(self, url: str, exchange: str) -> None:
        self.url = url
        self.exchange = exchange
        self.made: list[RabbitBroker] = []

    async def __call__(self) -> Broker:
        broker = RabbitBroker(self.url, exchange=self.exchange, publish_timeout=30.0,
                              reconnect_interval=0.5)
        self.made.append(broker)
        return broker

    def queues(self) -> set[str]:
        names: set[str] = set()
        for broker in self.made:
            names.update(broker.declared_queues())
        return names


class TestRabbitConformance(BrokerConformance):
    @pytest_asyncio.fixture
    async def broker_factory(  # type: ignore[override]
        self, amqp_url: str, unique: str
    ) -> AsyncIterator[BrokerFactory]:
        clients = _Clients(amqp_url, f"conformance-{unique}")
        yield clients
        await _delete(amqp_url, clients.exchange, clients.queues())

    @pytest_asyncio.fixture
    async def restartable(  # type: ignore[override]
        self, amqp_url: str, unique: str
    ) -> AsyncIterator[Restartable]:
        host, port = host_port(amqp_url)
        async with TcpProxy(host, port or 5672) as proxy:
            proxied = amqp_url.replace(f"{host}:{port}", f"127.0.0.1:{proxy.port}")
            clients = _Clients(proxied, f"conformance-restart-{unique}")

            async def restart() -> None:
                await proxy.outage(OUTAGE)

            yield Restartable(factory=clients, restart=restart)
        await _delete(amqp_url, clients.exchange, clients.queues())
