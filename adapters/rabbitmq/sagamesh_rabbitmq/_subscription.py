"""A subscription: one channel, one queue, one consumer; deliveries with ack/nack/reject.

Unordered: every delivery runs its handler at once (RabbitMQ's prefetch bounds how many). A nack
re-publishes the message with its next attempt number, straight into the subscription's queue or
through a delay queue, and then acks the original.

Ordered: the queue has a single active consumer, and the next delivery of a key waits here
(unacked, so it is never lost) until the current one is settled; messages without a key are not
held. A nack retries the same delivery locally after the delay, so a key never overtakes its
nacked head. A settled head's successor is run by the head's own task once its handler
returns (up to ``_CHAIN`` back to back), so a busy key costs no task and no event-loop turn per
message; if the handler keeps working after settling, the successor starts on the next turn.

An ack is queued on the connection's (FIFO) write queue and not waited for until the socket
took it: RabbitMQ learns of it no sooner either way, and a lost connection redelivers every
unacked message whether or not its ack had been written (at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from sagamesh.brokers.amqp_wire import decode
from sagamesh.brokers.base import MessageHandler
from sagamesh.message import Message

from ._codec import properties

if TYPE_CHECKING:
    from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustChannel

    from .broker import RabbitBroker

log = logging.getLogger("sagamesh_rabbitmq")

_CHAIN = 64  # successors of a key one task runs back to back before it yields


class RabbitDelivery:
    """One received message; settle it once (later calls do nothing)."""

    __slots__ = ("_raw", "_settled", "_sub", "attempt", "message", "offset", "partition")

    def __init__(self, sub: RabbitSubscription, raw: AbstractIncomingMessage, message: Message,
                 attempt: int) -> None:
        self._sub = sub
        self._raw = raw
        self._settled = False
        self.message = message
        self.attempt = attempt
        self.partition: int | None = None
        self.offset: int | None = None

    @property
    def settled(self) -> bool:
        return self._settled

    @property
    def redelivered(self) -> bool:
        """RabbitMQ delivered this message before (to this or another consumer)."""
        return bool(self._raw.redelivered)

    async def ack(self) -> None:
        if not self._settled:
            self._settled = True
            await self._sub._settle(self, "ack")

    async def reject(self) -> None:
        if not self._settled:
            self._settled = True
            await self._sub._settle(self, "reject")

    async def nack(self, delay: float | None = None) -> None:
        if not self._settled:
            self._settled = True
            await self._sub._nack(self, delay)

    def __repr__(self) -> str:
        return f"<RabbitDelivery {self.message.id} attempt={self.attempt}>"


def _stale(raw: AbstractIncomingMessage) -> bool:
    """The channel ``raw`` came on is gone: RabbitMQ has requeued it (and will redeliver)."""
    try:
        return bool(raw.channel.is_closed)
    except Exception:
        return True


class RabbitSubscription:
    def __init__(self, broker: RabbitBroker, topic: str, group: str | None, queue_name: str,
                 handler: MessageHandler, *, max_in_flight: int, ordered: bool,
                 drain_timeout: float = 10.0) -> None:
        self.topic = topic
        self.group = group
        self.queue_name = queue_name
        self.max_in_flight = max(1, max_in_flight)
        self.ordered = ordered
        self.drain_timeout = drain_timeout
        self._broker = broker
        self._handler = handler
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        # ordered only: key -> deliveries waiting behind the one being handled
        self._waiting: dict[str, deque[RabbitDelivery]] = {}
        # ordered only: successors whose key was released, for the releasing task to run next
        self._ready: deque[RabbitDelivery] = deque()
        self._ready_scheduled = False
        self.delivered = 0

    async def start(self, channel: AbstractRobustChannel, queue: AbstractQueue) -> None:
        self._channel = channel
        self._queue = queue
        self._tag = await queue.consume(self._on_message)

    # -- receiving ---------------------------------------------------------------------------

    async def _on_message(self, raw: AbstractIncomingMessage) -> None:
        """aio-pika runs this in a task per delivery, started in arrival order.

        The handler runs in a task of its own: aiormq cancels its consumer tasks when the
        channel dies, and a lost connection must not cut a user's handler short (its ack is
        then dropped and RabbitMQ redelivers: at-least-once).
        """
        if self._closed:
            return  # left unacked: closing the channel requeues it
        message, attempt = decode(raw)
        delivery = RabbitDelivery(self, raw, message, attempt)
        self.delivered += 1
        key = message.key
        if self.ordered and key is not None:
            waiting = self._waiting.get(key)
            if waiting is not None:
                waiting.append(delivery)  # its key is busy; handed over on settle
                return
            self._waiting[key] = deque()
        self._spawn(delivery)

    async def _run(self, delivery: RabbitDelivery) -> None:
        ready = self._ready
        for _ in range(_CHAIN):
            if self._closed:
                return  # never started: the channel close returns it
            await self._handle(delivery)
            if not ready:
                return
            delivery = ready.popleft()  # a successor this handler released: run it here
        self._spawn(delivery)

    async def _handle(self, delivery: RabbitDelivery) -> None:
        try:
            await self._handler(delivery)
        except asyncio.CancelledError:
            # Subscription closing: the channel close returns the message. Should anything
            # else cancel us, free the key so its later messages are not stuck behind it.
            if not delivery.settled and not self._closed and self.ordered:
                self._advance(delivery.message.key)
            raise
        except Exception:
            log.exception("handler for %s raised; message %s nacked", self.topic,
                          delivery.message.id)
            if not delivery.settled:
                await delivery.nack()
        else:
            if not delivery.settled:
                await delivery.ack()

    def _spawn(self, delivery: RabbitDelivery) -> None:
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self._run(delivery))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _advance(self, key: str | None) -> None:
        """The head of ``key`` is settled: hand over the next live delivery of that key."""
        if key is None:
            return  # unkeyed messages are never held back
        waiting = self._waiting.get(key)
        while waiting:
            nxt = waiting.popleft()
            if not _stale(nxt._raw):
                self._ready.append(nxt)
                if not self._ready_scheduled:
                    self._ready_scheduled = True
                    asyncio.get_running_loop().call_soon(self._start_ready)
                return
        self._waiting.pop(key, None)

    def _start_ready(self) -> None:
        """Successors their releasing task did not take (it was still busy): a task each."""
        self._ready_scheduled = False
        ready = self._ready
        while ready:
            self._spawn(ready.popleft())

    # -- settling ----------------------------------------------------------------------------

    async def _settle(self, delivery: RabbitDelivery, how: str) -> None:
        raw = delivery._raw
        try:
            if how == "ack":
                # Queued in order, not waited for until written (see the module docstring).
                tag = raw.delivery_tag
                assert tag is not None
                await raw.channel.basic_ack(tag, wait=False)
            else:
                await raw.reject(requeue=False)
        except Exception as exc:  # channel gone: RabbitMQ redelivers it (at least once)
            log.debug("%s of %s failed: %r", how, delivery.message.id, exc)
        if self.ordered:
            self._advance(delivery.message.key)

    async def _nack(self, delivery: RabbitDelivery, delay: float | None) -> None:
        if self.ordered:
            self._retry_locally(delivery, delay)
            return
        raw = delivery._raw
        if _stale(raw):
            return  # already requeued by RabbitMQ
        message = delivery.message
        try:
            if delay and delay > 0:
                target = await self._broker._delay_queue(self.queue_name, delay)
            else:
                target = self.queue_name
            props = properties(message, topic=message.topic, attempt=delivery.attempt + 1)
            await self._broker._republish(target, message.body, props)
        except Exception as exc:
            log.warning("retry of %s could not be re-published (%r); requeued instead",
                        message.id, exc)
            with contextlib.suppress(Exception):
                await raw.nack(requeue=True)
            return
        try:
            await raw.ack()
        except Exception as exc:  # the original comes back too: at-least-once
            log.debug("ack after re-publish of %s failed: %r", message.id, exc)

    def _retry_locally(self, delivery: RabbitDelivery, delay: float | None) -> None:
        again = RabbitDelivery(self, delivery._raw, delivery.message, delivery.attempt + 1)
        if not delay or delay <= 0:
            self._redispatch(again)
            return
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(handle)
            self._redispatch(again)

        handle = loop.call_later(delay, fire)
        self._timers.add(handle)

    def _redispatch(self, delivery: RabbitDelivery) -> None:
        if self._closed:
            return
        if _stale(delivery._raw):
            self._advance(delivery.message.key)
        else:
            self._spawn(delivery)

    # -- closing -----------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop consuming; let running handlers finish (up to ``drain_timeout``, then cancel
        them); every unsettled or held-back delivery goes back to the queue."""
        if self._closed:
            return
        self._closed = True
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        online = self._broker.online
        if online and self._queue is not None and self._tag is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self._queue.cancel(self._tag)
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        if tasks:
            _, running = await asyncio.wait(tasks, timeout=self.drain_timeout)
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        self._waiting.clear()
        self._ready.clear()
        if self._channel is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5 if self._broker.online else 0.5):
                    await self._channel.close()  # RabbitMQ requeues everything unacked
        self._broker._detach(self)
