"""A JetStream pull consumer driven by its own pull requests.

Pull requests ask for as many messages as there is room for (``max_in_flight`` minus what is
running, buffered or already requested), with an expiry and idle heartbeats; a status reply
(408/409) or two missed heartbeats (the server restarted) returns the outstanding credit and the
loop pulls again, recreating a consumer that vanished. Unsettled deliveries are kept alive with
``+WPI`` so a slow handler or a held key never causes a redelivery behind its back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from sagamesh._eager import DONE, step
from sagamesh.brokers.base import MessageHandler
from sagamesh.brokers.nats_wire import decode
from sagamesh.errors import BrokerUnavailableError
from sagamesh.message import Message

from .lease import GroupLease

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription as NatsSub

    from .broker import NatsBroker

log = logging.getLogger("sagamesh_nats")

_ACK, _NAK, _TERM, _WPI = b"+ACK", b"-NAK", b"+TERM", b"+WPI"
_INLINE = 64  # deliveries one handler task runs back to back before yielding the loop


class NatsDelivery:
    __slots__ = ("_reply", "_settled", "_sub", "attempt", "message", "offset", "partition",
                 "touched")

    def __init__(self, sub: NatsSubscription, message: Message, attempt: int, reply: str,
                 seq: int, now: float) -> None:
        self._sub = sub
        self._reply = reply
        self._settled = False
        self.message = message
        self.attempt = attempt
        self.partition: int | None = None
        self.offset: int | None = seq  # the stream sequence
        self.touched = now

    @property
    def settled(self) -> bool:
        return self._settled

    async def ack(self) -> None:
        await self._settle(_ACK)

    async def nack(self, delay: float | None = None) -> None:
        payload = _NAK
        if delay is not None and delay > 0:
            payload += b" " + json.dumps({"delay": int(delay * 1e9)}).encode()
        await self._settle(payload, redelivery_in=delay or 0.0)

    async def reject(self) -> None:
        """Terminate: JetStream never redelivers it (the consumer dead-letters it itself)."""
        await self._settle(_TERM)

    async def in_progress(self) -> None:
        """Tell JetStream the handler is still working (resets the ack wait)."""
        if not self._settled:
            self.touched = asyncio.get_running_loop().time()
            await self._sub._send(self._reply, _WPI)

    async def _settle(self, payload: bytes, redelivery_in: float | None = None) -> None:
        if self._settled:
            return
        self._settled = True
        # Local state first: a nacked message may come back before the send returns.
        self._sub._on_settled(self, redelivery_in)
        # Stepped eagerly: nats-py's publish normally only buffers, so the settle completes in
        # this event-loop turn (a task per settle cost an extra turn per message, and with
        # per-key ordering those turns add up serially). If it has to wait, the rest runs
        # shielded: a handler cancelled mid-ack must not leave the message settled here but
        # unacknowledged at the server (it would wait out the whole ack wait).
        rest = step(self._sub._send(self._reply, payload))
        if rest is not DONE:
            await asyncio.shield(rest)


class NatsSubscription:
    def __init__(self, broker: NatsBroker, topic: str, group: str | None, handler: MessageHandler,
                 *, stream: str, consumer: str, config: Any, max_in_flight: int,
                 ordered: bool) -> None:
        self._broker = broker
        self.topic = topic
        self.group = group
        self._handler = handler
        self._stream = stream
        self._consumer = consumer
        self._config = config  # nats.js.api.ConsumerConfig
        self._max = max(1, max_in_flight)
        self._ordered = ordered
        self._opts = broker.options
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = ""
        self._nats_sub: NatsSub | None = None
        self._pending = 0  # messages requested and not yet received
        self._running = 0
        self._ready: deque[NatsDelivery] = deque()
        self._held: dict[str, deque[NatsDelivery]] = {}
        self._held_count = 0
        self._busy: set[str] = set()
        # ordered: key -> (stream seq, deadline) of a nacked message the key waits for
        self._awaiting: dict[str, tuple[int, float]] = {}
        self._unsettled: dict[int, NatsDelivery] = {}
        self._last_seq = 0
        self._last_activity = 0.0
        self._consumer_lost = False
        self._closed = False
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._close_task: asyncio.Task[None] | None = None
        self._lease: GroupLease | None = None
        if ordered and group is not None:
            self._lease = GroupLease(broker, f"{stream}.{consumer}", broker.options.lease_ttl,
                                     self._on_lease)
        self._active = self._lease is None  # only the lease holder of an ordered group pulls

    @property
    def active(self) -> bool:
        """False while an ordered group's other member holds the lease (standing by)."""
        return self._active

    def _on_lease(self, held: bool) -> None:
        self._active = held
        self._wake.set()

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        nc = self._broker._client()
        await self._broker._create_consumer(self._stream, self._config)
        self._inbox = nc.new_inbox()
        self._nats_sub = await nc.subscribe(self._inbox, cb=self._on_msg,
                                            pending_msgs_limit=max(65536, self._max * 4))
        loop = asyncio.get_running_loop()
        self._last_activity = loop.time()
        self._loops = [
            loop.create_task(self._pull_loop(), name=f"sagamesh-nats-pull:{self.topic}"),
            loop.create_task(self._keepalive_loop(), name=f"sagamesh-nats-keepalive:{self.topic}"),
        ]
        if self._lease is not None:
            await self._lease.try_acquire()
            self._loops.append(loop.create_task(self._lease.run(),
                                                name=f"sagamesh-nats-lease:{self.topic}"))
        self._wake.set()

    async def close(self) -> None:
        """Stop pulling, return unsettled deliveries (nak), remove an ephemeral consumer."""
        if self._close_task is None:
            self._close_task = asyncio.ensure_future(self._close())
        await asyncio.shield(self._close_task)

    async def _close(self) -> None:
        self._closed = True
        self._broker._stopping += 1
        try:
            await self._stop()
        finally:
            self._broker._stopped()
        # Hand back only once no sibling subscription of this connection is still stopping:
        # JetStream redelivers a nak at once, possibly into a sibling's last pull request
        # that is about to vanish, and the message would then sit out the whole ack wait.
        await self._broker._siblings_stopped()
        for delivery in list(self._unsettled.values()):
            with contextlib.suppress(Exception):
                await delivery.nack()
        if self._lease is not None:
            await self._lease.release()  # after handing back: the next member starts in order
        if self.group is None:
            with contextlib.suppress(Exception):
                await self._broker._delete_consumer(self._stream, self._consumer)
        self._broker._detach(self)

    async def _stop(self) -> None:
        self._wake.set()
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._nats_sub is not None:
            with contextlib.suppress(Exception):
                # Drop interest (the server then forgets our pull requests) and take in what
                # is already buffered; _close hands it back.
                await asyncio.wait_for(self._nats_sub.drain(),  # type: ignore[no-untyped-call]
                                       self._opts.api_timeout)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def on_reconnected(self) -> None:
        """Pull requests do not survive a server restart: ask again."""
        self._pending = 0
        self._last_activity = asyncio.get_running_loop().time()
        self._wake.set()

    # -- receiving -----------------------------------------------------------------------------

    async def _on_msg(self, msg: Msg) -> None:
        now = asyncio.get_running_loop().time()
        self._last_activity = now
        headers = msg.headers
        if not msg.data and headers and "Status" in headers:
            self._on_status(headers)
            return
        if self._pending:
            self._pending -= 1
            if not self._pending:
                self._wake.set()  # the pull is used up: maybe pull again
        try:
            meta = msg.metadata
        except Exception:
            log.warning("NATS %s: dropping a message without JetStream metadata", self.topic)
            return
        seq = meta.sequence.stream
        known = self._unsettled.get(seq)
        if known is not None:  # redelivered while we still hold it: keep the fresh ack subject
            known._reply = msg.reply
            return
        if seq > self._last_seq:
            self._last_seq = seq
        message = decode(self.topic, msg.data, headers, f"{self._stream}:{seq}")
        delivery = NatsDelivery(self, message, meta.num_delivered, msg.reply, seq, now)
        self._unsettled[seq] = delivery
        if self._closed:  # closing: it is handed back with the other unsettled ones
            return
        if not self._active:  # lease lost while a pull was out: let the holder have it
            self._unsettled.pop(seq, None)
            with contextlib.suppress(BrokerUnavailableError):
                await self._send(msg.reply, _NAK)
            return
        key = message.key
        if key is not None and key in self._awaiting and self._awaiting[key][0] == seq:
            # The nacked message of a held key is back: it goes first, the key stays busy.
            del self._awaiting[key]
            self._ready.append(delivery)
            self._drain()
            return
        self._dispatch(delivery)

    def _on_status(self, headers: dict[str, str]) -> None:
        status = headers.get("Status", "")
        if status == "100":  # idle heartbeat
            return
        description = headers.get("Description", "")
        left = headers.get("Nats-Pending-Messages")
        if left is not None and left.isdigit():
            self._pending = max(0, self._pending - int(left))
        else:
            self._pending = 0
        if status == "503" or "Consumer Deleted" in description:
            self._consumer_lost = True
        elif status not in ("404", "408"):
            log.debug("NATS %s: pull status %s %s", self.topic, status, description)
        self._wake.set()

    def _dispatch(self, delivery: NatsDelivery) -> None:
        key = delivery.message.key
        if self._ordered and key is not None:
            if key in self._busy:
                self._held.setdefault(key, deque()).append(delivery)
                self._held_count += 1
                return
            self._busy.add(key)
        self._ready.append(delivery)
        self._drain()

    def _drain(self) -> None:
        while self._ready and self._running < self._max and not self._closed:
            delivery = self._ready.popleft()
            self._running += 1
            task = asyncio.get_running_loop().create_task(self._handle(delivery))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handle(self, delivery: NatsDelivery) -> None:
        """Run ``delivery``, then (up to ``_INLINE`` times) a delivery that became ready
        meanwhile, e.g. the next one of a key it released: back to back in this task, so an
        ordered key's chain costs no task and no event-loop turn per message, and its acks go
        out in one write instead of one each."""
        budget = _INLINE
        try:
            while True:
                try:
                    await self._run(delivery)
                finally:
                    self._running -= 1
                if not (budget and self._ready and self._running < self._max
                        and not self._closed):
                    break
                budget -= 1
                delivery = self._ready.popleft()
                self._running += 1
        finally:
            self._drain()
            self._wake.set()

    async def _run(self, delivery: NatsDelivery) -> None:
        try:
            await self._handler(delivery)
        except asyncio.CancelledError:
            raise  # closing: _close naks what is unsettled
        except Exception:
            log.exception("handler for %s raised; message %s nacked", self.topic,
                          delivery.message.id)
            if not delivery.settled:
                with contextlib.suppress(BrokerUnavailableError):
                    await delivery.nack()
        else:
            if not delivery.settled:
                with contextlib.suppress(BrokerUnavailableError):
                    await delivery.ack()

    def _on_settled(self, delivery: NatsDelivery, redelivery_in: float | None = None) -> None:
        if delivery.offset is not None:
            self._unsettled.pop(delivery.offset, None)
        key = delivery.message.key
        if (self._ordered and key is not None and redelivery_in is not None
                and delivery.offset is not None and not self._closed):
            # Nacked: the key keeps waiting for this very message (JetStream would otherwise
            # hand us the key's next message first). If it never comes back here (another
            # member got it), the key is released after the deadline.
            deadline = (asyncio.get_running_loop().time() + redelivery_in
                        + self._opts.ack_wait + 2 * self._opts.idle_heartbeat + 1)
            self._awaiting[key] = (delivery.offset, deadline)
            self._wake.set()
            return
        if self._ordered and key is not None and key in self._busy:
            self._release(key)
        self._wake.set()

    def _release(self, key: str) -> None:
        """The key's current message is settled: hand over its next one, if any."""
        held = self._held.get(key)
        if held:
            self._ready.append(held.popleft())
            self._held_count -= 1
            if not held:
                del self._held[key]
            if asyncio.current_task() in self._tasks:
                # Settled from a handler task: it runs the next one itself if it finishes in
                # this turn; if it keeps working, the next one starts on its own next turn.
                asyncio.get_running_loop().call_soon(self._drain)
            else:
                self._drain()
        else:
            self._busy.discard(key)

    async def _send(self, reply: str, payload: bytes) -> None:
        try:
            await self._broker._client().publish(reply, payload)
        except Exception as exc:
            raise BrokerUnavailableError(f"NATS: cannot settle a delivery: {exc}") from exc

    # -- pulling -------------------------------------------------------------------------------

    def _room(self) -> int:
        room = self._max - self._running - len(self._ready) - self._held_count - self._pending
        if room <= 0 and self._awaiting and not self._pending:
            return 1  # keep one pull out, or a nacked message of a held key never returns
        return room

    async def _pull_loop(self) -> None:
        opts = self._opts
        request = {"expires": int(opts.pull_expires * 1e9),
                   "idle_heartbeat": int(opts.idle_heartbeat * 1e9)}
        threshold = max(1, self._max // 4)
        backoff = 0.1
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            if self._closed:
                return
            try:
                if not self._active:
                    continue
                if self._consumer_lost:
                    await self._recreate_consumer()
                room = self._room()
                if room <= 0 or (self._pending and room < threshold):
                    continue
                request["batch"] = room
                nc = self._broker._client()
                await nc.publish(self._next_subject, json.dumps(request).encode(),
                                 reply=self._inbox)
                self._pending += room
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("NATS %s: pull failed (%s); retrying in %.1fs", self.topic, exc,
                          backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                self._wake.set()

    async def _recreate_consumer(self) -> None:
        config = self._config
        if self.group is None and self._last_seq:
            from nats.js.api import DeliverPolicy

            config = config.evolve(deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                                   opt_start_seq=self._last_seq + 1)
        await self._broker._create_consumer(self._stream, config)
        self._consumer_lost = False
        self._pending = 0

    async def _keepalive_loop(self) -> None:
        opts = self._opts
        tick = min(opts.idle_heartbeat, opts.ack_wait / 3)
        stale = opts.ack_wait / 3
        loop = asyncio.get_running_loop()
        while not self._closed:
            await asyncio.sleep(tick)
            now = loop.time()
            if self._pending and now - self._last_activity > 2 * opts.idle_heartbeat + 1:
                # Heartbeats stopped: the server lost our pull requests (restart, failover).
                self._pending = 0
                self._last_activity = now
                self._consumer_lost = True  # cheap and idempotent: ensure it exists
                self._wake.set()
            for key, (seq, deadline) in list(self._awaiting.items()):
                if now > deadline:
                    log.warning("NATS %s: nacked message %s of key %r did not come back to this "
                                "subscription; releasing the key", self.topic, seq, key)
                    del self._awaiting[key]
                    self._release(key)
            for delivery in list(self._unsettled.values()):
                if not delivery.settled and now - delivery.touched > stale:
                    delivery.touched = now
                    with contextlib.suppress(Exception):
                        await self._send(delivery._reply, _WPI)
