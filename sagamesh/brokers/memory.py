"""The embedded in-memory broker (``memory://``).

It behaves like a real broker so that the same conformance suite runs on it: topics keep a
bounded retained log, consumer groups are durable (each group gets every message once, its members
share it), deliveries are acked, nacked (optionally after a delay) or rejected, unsettled messages
return on close, and with ``ordered=True`` the next message of a key waits until the current one
is settled (a nacked message keeps its place at the head of its key).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import BrokerUnavailableError
from ..message import Message
from .base import BrokerTransaction, Capabilities, Health, MessageHandler

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Entry:
    message: Message
    attempt: int = 1
    offset: int = 0


class _Group:
    """Pending messages of one consumer group, with per-key readiness when ordered."""

    __slots__ = (
        "anonymous",
        "busy",
        "key_queues",
        "members",
        "name",
        "ordered",
        "ready_keys",
        "ready_set",
        "unkeyed",
        "waiters",
    )

    def __init__(self, name: str, *, ordered: bool, anonymous: bool) -> None:
        self.name = name
        self.ordered = ordered
        self.anonymous = anonymous
        self.unkeyed: deque[_Entry] = deque()
        self.key_queues: dict[str, deque[_Entry]] = {}
        self.ready_keys: deque[str] = deque()
        self.ready_set: set[str] = set()
        self.busy: set[str] = set()
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.members: list[_MemorySubscription] = []

    def __len__(self) -> int:
        return len(self.unkeyed) + sum(len(q) for q in self.key_queues.values())

    def put(self, entry: _Entry, *, front: bool = False) -> None:
        key = entry.message.key
        if not self.ordered or not key:
            if front:
                self.unkeyed.appendleft(entry)
            else:
                self.unkeyed.append(entry)
        else:
            queue = self.key_queues.get(key)
            if queue is None:
                queue = self.key_queues[key] = deque()
            if front:
                queue.appendleft(entry)
            else:
                queue.append(entry)
            self._mark_ready(key)
        self._wake()

    def _mark_ready(self, key: str) -> None:
        if key not in self.busy and key not in self.ready_set and self.key_queues.get(key):
            self.ready_set.add(key)
            self.ready_keys.append(key)

    def _wake(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def take(self) -> _Entry | None:
        if self.unkeyed:
            return self.unkeyed.popleft()
        while self.ready_keys:
            key = self.ready_keys.popleft()
            self.ready_set.discard(key)
            queue = self.key_queues.get(key)
            if not queue:
                continue
            entry = queue.popleft()
            if not queue:
                del self.key_queues[key]
            self.busy.add(key)
            return entry
        return None

    def release(self, entry: _Entry) -> None:
        """The delivery of ``entry`` is settled (or returned): its key may go on."""
        key = entry.message.key
        if self.ordered and key:
            self.busy.discard(key)
            self._mark_ready(key)
            if key in self.ready_set:
                self._wake()

    def requeue(self, entry: _Entry) -> None:
        """Put a nacked entry back at the head of its key (or of the unkeyed queue)."""
        self.put(entry, front=True)
        self.release(entry)


class _MemoryDelivery:
    __slots__ = ("_entry", "_group", "_state", "_sub", "attempt", "message", "offset", "partition")

    def __init__(self, sub: _MemorySubscription, entry: _Entry) -> None:
        self._sub = sub
        self._group = sub.group_state
        self._entry = entry
        self._state = 0  # 0 open, 1 settled
        self.message = entry.message
        self.attempt = entry.attempt
        self.partition: int | None = 0
        self.offset: int | None = entry.offset

    @property
    def settled(self) -> bool:
        return self._state != 0

    def _settle(self) -> bool:
        if self._state:
            return False
        self._state = 1
        self._sub.inflight.discard(self)
        return True

    async def ack(self) -> None:
        if self._settle():
            self._group.release(self._entry)

    async def reject(self) -> None:
        if self._settle():
            self._sub.broker.rejected += 1
            self._group.release(self._entry)

    async def nack(self, delay: float | None = None) -> None:
        if not self._settle():
            return
        entry = _Entry(self._entry.message, self._entry.attempt + 1, self._entry.offset)
        if delay and delay > 0:
            self._sub.broker._schedule(delay, self._group, self._entry, entry)
        else:
            self._group.requeue(entry)

    def _return(self) -> None:
        """Subscription closed before the handler settled: redeliver to the group."""
        if self._settle():
            self._group.requeue(
                _Entry(self._entry.message, self._entry.attempt + 1, self._entry.offset)
            )


class _MemorySubscription:
    def __init__(
        self,
        broker: MemoryBroker,
        topic: str,
        group: str | None,
        group_state: _Group,
        handler: MessageHandler,
        max_in_flight: int,
    ) -> None:
        self.broker = broker
        self.topic = topic
        self.group = group
        self.group_state = group_state
        self.handler = handler
        self.max_in_flight = max(1, max_in_flight)
        self.inflight: set[_MemoryDelivery] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._loop_task = asyncio.create_task(self._pump(), name=f"memory-sub:{topic}")

    async def _pump(self) -> None:
        sem = asyncio.Semaphore(self.max_in_flight)
        group = self.group_state
        loop = asyncio.get_running_loop()
        while True:
            await sem.acquire()
            entry = group.take()
            while entry is None:
                waiter: asyncio.Future[None] = loop.create_future()
                group.waiters.append(waiter)
                try:
                    await waiter
                except asyncio.CancelledError:
                    sem.release()
                    if waiter.done() and not waiter.cancelled():
                        group._wake()  # we were woken but close first: pass the wakeup on
                    raise
                entry = group.take()
            delivery = _MemoryDelivery(self, entry)
            self.inflight.add(delivery)
            task = loop.create_task(self._handle(delivery))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(lambda _t: sem.release())

    async def _handle(self, delivery: _MemoryDelivery) -> None:
        try:
            await self.handler(delivery)
        except asyncio.CancelledError:
            delivery._return()
            raise
        except Exception:
            log.exception("handler for %s raised; message %s nacked",
                          self.topic, delivery.message.id)
            if not delivery.settled:
                await delivery.nack()
        else:
            if not delivery.settled:
                await delivery.ack()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop_task.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(self._loop_task, *self._tasks, return_exceptions=True)
        for delivery in list(self.inflight):
            delivery._return()
        self.broker._detach(self)


@dataclass(slots=True)
class _Topic:
    log: deque[Message]
    groups: dict[str, _Group] = field(default_factory=dict)
    offset: int = 0


class _MemoryTransaction:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def publish(self, message: Message) -> None:
        self.messages.append(message)


class MemoryBroker:
    """In-process broker; one instance is one broker (no state is shared between instances)."""

    name = "memory"
    capabilities = Capabilities(
        persistent=True,
        ordered_by_key=True,
        consumer_groups=True,
        native_transactions=True,
        delayed_redelivery=True,
        native_dead_letter=False,
    )

    def __init__(self, url: str = "memory://", *, retention: int = 10_000, **_: Any) -> None:
        self.url = url
        self.retention = retention
        self._topics: dict[str, _Topic] = {}
        self._subs: set[_MemorySubscription] = set()
        # Delayed redeliveries: handle -> the requeue it will do (run at once on close).
        self._timers: dict[asyncio.TimerHandle, Callable[[], None]] = {}
        self._connected = False
        self._anon = itertools.count(1)
        self.published = 0
        self.rejected = 0

    async def connect(self) -> None:
        self._connected = True

    async def close(self) -> None:
        if not self._connected and not self._subs:
            return
        self._connected = False
        await asyncio.gather(*(sub.close() for sub in list(self._subs)), return_exceptions=True)
        timers, self._timers = self._timers, {}
        for timer, requeue in timers.items():
            timer.cancel()
            requeue()  # a nacked message is not lost by closing the broker

    async def __aenter__(self) -> MemoryBroker:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _require_connected(self) -> None:
        if not self._connected:
            raise BrokerUnavailableError("memory broker is not connected (use `async with`)")

    def _topic(self, name: str) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = _Topic(deque(maxlen=self.retention))
        return topic

    def _deliver(self, message: Message) -> None:
        topic = self._topic(message.topic)
        topic.offset += 1
        if self.retention:
            topic.log.append(message)
        for group in topic.groups.values():
            group.put(_Entry(message, 1, topic.offset))
        self.published += 1

    async def publish(self, message: Message) -> None:
        self._require_connected()
        self._deliver(message)

    async def publish_many(self, messages: Sequence[Message]) -> list[Exception | None]:
        self._require_connected()
        for message in messages:
            self._deliver(message)
        return [None] * len(messages)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[BrokerTransaction]:
        """Messages become visible together at commit; an exception discards them all."""
        self._require_connected()
        tx = _MemoryTransaction()
        yield tx
        self._require_connected()
        for message in tx.messages:
            self._deliver(message)

    async def subscribe(
        self,
        topic: str,
        handler: MessageHandler,
        *,
        group: str | None = None,
        max_in_flight: int = 64,
        ordered: bool = False,
    ) -> _MemorySubscription:
        self._require_connected()
        state = self._topic(topic)
        name = group if group is not None else f"_anon.{next(self._anon)}"
        group_state = state.groups.get(name)
        if group_state is None:
            group_state = _Group(name, ordered=ordered, anonymous=group is None)
            state.groups[name] = group_state
            first = state.offset - len(state.log) + 1
            for i, message in enumerate(state.log):
                group_state.put(_Entry(message, 1, first + i))
        sub = _MemorySubscription(self, topic, group, group_state, handler, max_in_flight)
        group_state.members.append(sub)
        self._subs.add(sub)
        return sub

    def _detach(self, sub: _MemorySubscription) -> None:
        self._subs.discard(sub)
        group = sub.group_state
        if sub in group.members:
            group.members.remove(sub)
        if group.anonymous and not group.members:
            self._topics[sub.topic].groups.pop(group.name, None)

    def _schedule(self, delay: float, group: _Group, old: _Entry, new: _Entry) -> None:
        loop = asyncio.get_running_loop()

        def requeue() -> None:
            group.requeue(new)

        def fire() -> None:
            self._timers.pop(handle, None)
            requeue()

        if not (group.ordered and old.message.key):
            # Unordered: the key need not stay blocked while the delay runs.
            group.release(old)

        handle = loop.call_later(delay, fire)
        self._timers[handle] = requeue

    async def health(self) -> Health:
        return Health(healthy=self._connected, broker=self.name,
                      detail="connected" if self._connected else "closed")

    # Introspection for tests and the CLI.
    def queued(self, topic: str, group: str) -> int:
        """Messages waiting (not in flight) for ``group`` on ``topic``."""
        state = self._topics.get(topic)
        if state is None or group not in state.groups:
            return 0
        return len(state.groups[group])

    def topics(self) -> list[str]:
        return sorted(self._topics)
