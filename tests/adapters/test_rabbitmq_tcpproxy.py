"""The broker-agnostic TCP proxy the RabbitMQ restart tests cut connections with."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest_asyncio

from sagamesh.testing.tcpproxy import TcpProxy


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest_asyncio.fixture
async def echo_port() -> AsyncIterator[int]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def _roundtrip(port: int, payload: bytes) -> tuple[bytes, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    data = await asyncio.wait_for(reader.readexactly(len(payload)), 5)
    return data, writer


async def _is_cut(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(10), 5) == b""
    except ConnectionError:
        return True


async def test_forwards_both_ways_and_counts(echo_port: int) -> None:
    async with TcpProxy("127.0.0.1", echo_port) as proxy:
        payload = bytes(range(256)) * 1000  # 256 kB, several chunks each way
        data, writer = await _roundtrip(proxy.port, payload)
        assert data == payload
        assert proxy.accepted == 1 and proxy.active == 1
        writer.close()


async def test_sever_cuts_every_live_connection(echo_port: int) -> None:
    async with TcpProxy("127.0.0.1", echo_port) as proxy:
        clients = [await asyncio.open_connection("127.0.0.1", proxy.port) for _ in range(3)]
        await proxy.wait_connections(3, within=5)
        assert await proxy.sever() == 3
        assert proxy.active == 0 and proxy.severed == 3
        for reader, _ in clients:
            assert await _is_cut(reader)
        data, writer = await _roundtrip(proxy.port, b"again")  # new connections still work
        assert data == b"again"
        writer.close()


async def test_outage_refuses_then_accepts_again(echo_port: int) -> None:
    async with TcpProxy("127.0.0.1", echo_port) as proxy:
        _, first = await _roundtrip(proxy.port, b"x")
        loop = asyncio.get_running_loop()
        started = loop.time()
        outage = asyncio.create_task(proxy.outage(0.5))
        await asyncio.sleep(0)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await _is_cut(reader), "a connection during the outage must be refused"
        writer.close()
        assert await outage == 1
        assert loop.time() - started >= 0.45
        data, second = await _roundtrip(proxy.port, b"back")
        assert data == b"back"
        assert proxy.accepted == 2
        first.close()
        second.close()
