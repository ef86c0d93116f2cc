"""A small asyncio TCP proxy for tests that must cut a client off from its broker.

It forwards every accepted connection to ``target`` and can :meth:`~TcpProxy.sever` all live
connections at once (the client sees the broker vanish, as after a crash or a network cut) and
optionally refuse new ones for a while, without touching the shared broker itself::

    async with TcpProxy("127.0.0.1", 5672) as proxy:
        broker = create_broker(f"amqp://guest:guest@127.0.0.1:{proxy.port}/")
        ...
        await proxy.sever()                # drop every connection now
        await proxy.sever(down_for=1.0)    # drop them and refuse reconnects for a second

It is broker-agnostic: nothing here knows about AMQP, NATS or Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

_CHUNK = 65536


@dataclass(eq=False)
class _Link:
    """One proxied connection: the client side, the upstream side and the two pumps."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    pumps: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            transport = writer.transport
            if not transport.is_closing():
                transport.abort()  # RST-like: no graceful close frames reach either side


class TcpProxy:
    """Forward ``listen_host:port`` to ``target_host:target_port``; sever on demand."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        listen_host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self._port = port
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._refusing = False
        self._reopen: asyncio.TimerHandle | None = None
        self._changed = asyncio.Condition()
        self._flowing = asyncio.Event()  # cleared by hold(): bytes wait, connections stay up
        self._flowing.set()
        self.accepted = 0
        self.severed = 0

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("proxy is not started")
        return self._port

    @property
    def active(self) -> int:
        """Connections currently proxied."""
        return len(self._links)

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, self.listen_host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._cut_all()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def sever(self, *, down_for: float = 0.0) -> int:
        """Abort every live connection; with ``down_for`` refuse new ones that long.

        Returns how many connections were cut.
        """
        if down_for > 0:
            self._refusing = True
            if self._reopen is not None:
                self._reopen.cancel()
            self._reopen = asyncio.get_running_loop().call_later(down_for, self._accept_again)
        cut = self._cut_all()
        await asyncio.sleep(0)  # let the pumps observe the abort
        return cut

    def hold(self) -> None:
        """Stop forwarding in both directions while every connection stays open (a stalled
        network path or a server that stopped answering); :meth:`release` lets the bytes on."""
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()

    async def outage(self, duration: float) -> int:
        """Sever every connection and refuse new ones for ``duration`` seconds; returns (with
        the number cut) once connections are accepted again, like a restarted server."""
        cut = await self.sever(down_for=duration)
        async with self._changed:
            await self._changed.wait_for(lambda: not self._refusing)
        return cut

    def _accept_again(self) -> None:
        self._refusing = False
        self._reopen = None
        task = asyncio.get_running_loop().create_task(self._notify())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _cut_all(self) -> int:
        links = list(self._links)
        for link in links:
            link.abort()
            for pump in link.pumps:
                pump.cancel()
        self._links.clear()
        self.severed += len(links)
        return len(links)

    async def wait_connections(self, count: int = 1, within: float = 30.0) -> None:
        """Wait until at least ``count`` connections are proxied (e.g. a client reconnected)."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: len(self._links) >= count)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(
                self.target_host, self.target_port
            )
        except OSError:
            writer.transport.abort()
            return
        if self._refusing:  # severed while we were connecting upstream
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self.accepted += 1
        link = _Link(writer, up_writer)
        self._links.add(link)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.get_running_loop().create_task(self._pump(link, src, dst))
            link.pumps.append(task)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await self._notify()

    async def _pump(
        self, link: _Link, src: asyncio.StreamReader, dst: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                data = await src.read(_CHUNK)
                if not data:
                    break
                if not self._flowing.is_set():
                    await self._flowing.wait()
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # One side went away: take the other down too, as a real network path would.
            link.abort()
            self._links.discard(link)
            with contextlib.suppress(Exception):
                dst.close()
