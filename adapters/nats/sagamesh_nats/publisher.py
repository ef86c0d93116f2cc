"""Confirmed JetStream publishes written straight onto nats-py's connection.

nats-py's ``JetStreamContext.publish_async`` spends about 40 µs of Python per message on the
benchmark machine (a NUID plus ``os.urandom`` per reply token, its window semaphore under
``asyncio.wait_for``, a regex and two encodes per header, a done callback, three dict
operations), more than the server spends storing the message, so the raw client, not the
broker, bounded pipelined publishing. Here a publish is an HPUB frame appended to the
client's own outgoing buffer (the buffer and flusher task nats-py's ``publish`` uses, so write
order, flushing and buffering across a reconnect stay nats-py's), its reply subject a counter
under one inbox of ours, and its PubAck the answer on that inbox: about 17 µs per message.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

from sagamesh._eager import finish_within
from sagamesh.errors import BrokerUnavailableError

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

# nats-py internals the frames go through; present since nats-py 2.9 (checked on connect)
INTERNALS = ("_pending", "_pending_data_size", "_flush_pending", "_flush_queue",
             "_max_payload", "_max_pending_size")
_CRLF = b"\r\n"
_ACK = b'{"stream"'  # a PubAck; an error answer starts with {"error"
# Bytes a batch queues before it wakes the flusher and yields once, so the server stores the
# first messages while later ones are still being encoded (both cores busy).
FLUSH_EVERY = 64 * 1024


class PubAckInbox:
    """Sends HPUB frames and matches their PubAcks; at most ``window`` awaited at once."""

    __slots__ = ("_nc", "_prefix", "_resume_at", "_room", "_seq", "_waiting", "window")

    def __init__(self, nc: Client, window: int) -> None:
        missing = [name for name in INTERNALS if not hasattr(nc, name)]
        if missing:
            import nats

            raise BrokerUnavailableError(
                f"nats-py {getattr(nats, '__version__', '?')} lacks {', '.join(missing)}: "
                "sagamesh_nats needs nats-py >= 2.9, < 3")
        self._nc = nc
        self.window = max(1, window)
        self._resume_at = self.window * 3 // 4  # wake window waiters with a quarter free
        self._prefix = nc.new_inbox() + "."
        self._seq = 0
        self._waiting: dict[str, asyncio.Future[None]] = {}  # reply subject -> PubAck
        self._room: list[asyncio.Future[None]] = []

    async def start(self) -> None:
        # nats-py holds the subscription (and renews it after a reconnect); closing the
        # connection ends it
        await self._nc.subscribe(self._prefix + "*", cb=self._on_reply)

    @property
    def pending(self) -> int:
        """PubAcks awaited (timed-out ones count until :meth:`prune`)."""
        return len(self._waiting)

    @property
    def queued(self) -> int:
        """Bytes written but not yet handed to the socket."""
        return int(self._nc._pending_data_size)

    def send(self, subject: str, headers: bytes, body: bytes) -> asyncio.Future[None]:
        """Queue one HPUB frame; the future is the PubAck. ``headers`` is a complete NATS
        header block (:func:`sagamesh.brokers.nats_wire.header_block`)."""
        nc = self._nc
        hlen = len(headers)
        size = hlen + len(body)
        if size > nc._max_payload:
            import nats.errors

            raise nats.errors.MaxPayloadError
        if not nc.is_connected or nc.is_draining:
            _check_state(nc, size)
        self._seq += 1
        reply = f"{self._prefix}{self._seq}"
        line = f"HPUB {subject} {reply} {hlen} {size}\r\n".encode()
        nc._pending.extend((line, headers, body, _CRLF))
        nc._pending_data_size += len(line) + size + 2
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[reply] = future
        return future

    async def kick(self) -> None:
        """Have nats-py's flusher write what is queued (as its own ``publish`` does)."""
        nc = self._nc
        queue = nc._flush_queue
        if queue is not None and queue.empty():
            await nc._flush_pending()

    async def flush(self) -> None:
        """Wake the flusher and let it write before queueing more."""
        nc = self._nc
        if nc._pending_data_size > nc._max_pending_size > 0:
            await nc._flush_pending(force_flush=True)  # bounded buffer, as nats-py's publish
            return
        await self.kick()
        await asyncio.sleep(0)

    async def room(self, limit: float) -> bool:
        """Wait until fewer than ``window`` PubAcks are awaited; False after ``limit`` seconds."""
        if len(self._waiting) < self.window:
            return True
        await self.kick()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._room.append(waiter)
        if await finish_within(waiter, limit):
            return len(self._waiting) < self.window
        return True

    def prune(self) -> None:
        """Forget PubAcks whose wait ended (timed out or cancelled): they free their slot."""
        self._waiting = {reply: f for reply, f in self._waiting.items() if not f.done()}
        self._wake()

    def fail_all(self, error: Exception) -> None:
        """The connection dropped: an answer in flight is lost with it."""
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(error)
        self._wake()

    def _wake(self) -> None:
        if self._room and len(self._waiting) <= self._resume_at:
            room, self._room = self._room, []
            for waiter in room:
                if not waiter.done():
                    waiter.set_result(None)

    async def _on_reply(self, msg: Msg) -> None:
        future = self._waiting.pop(msg.subject, None)
        if future is None:
            return
        if self._room:
            self._wake()
        if future.done():
            return
        if msg.data.startswith(_ACK):
            future.set_result(None)
        else:
            _answer_otherwise(future, msg)


def _answer_otherwise(future: asyncio.Future[None], msg: Msg) -> None:
    """Anything but a plain PubAck: no stream (503), a JetStream error, or an ack whose
    fields came in another order."""
    from nats.js.errors import APIError, NoStreamResponseError

    if msg.headers and msg.headers.get("Status") == "503":
        future.set_exception(NoStreamResponseError())
        return
    try:
        answer = json.loads(msg.data)
    except ValueError:
        future.set_exception(APIError(description=f"unreadable PubAck {msg.data[:200]!r}"))
        return
    if isinstance(answer, dict) and "error" in answer:
        try:
            APIError.from_error(answer["error"])  # raises the error's class, never returns
        except Exception as exc:
            future.set_exception(exc)
    elif isinstance(answer, dict) and "stream" in answer:
        future.set_result(None)
    else:
        future.set_exception(APIError(description=f"unexpected PubAck {msg.data[:200]!r}"))


def _check_state(nc: Client, size: int) -> None:
    """As nats-py's own publish: refused once closed or draining; while reconnecting,
    buffered up to ``pending_size``."""
    import nats.errors

    if nc.is_closed:
        raise nats.errors.ConnectionClosedError
    if nc.is_draining_pubs:
        raise nats.errors.ConnectionDrainingError
    if not nc.is_connected:
        limit = nc._max_pending_size
        if limit <= 0 or size + nc._pending_data_size > limit:
            raise nats.errors.OutboundBufferLimitError
