"""Hands fetched records to handler tasks: bounded concurrency, per-key order, delayed redelivery.

Kafka orders a partition, not a key; a partition holds many keys. With ``ordered=True`` the
dispatcher keeps one queue per key, so the next message of a key waits for the current one to
be settled while other keys (of the same or other partitions) run concurrently. A nacked record
stays here (it is not committed, so a crash still redelivers it) and is handed over again at
the head of its key, after the delay when one was given.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from sagamesh.message import Message

QUEUED, RUNNING, HELD, DONE, DROPPED = range(5)
_INLINE = 64  # items one handler task runs back to back before it yields its slot


class Item:
    """One received record while it is not settled (it lives across redeliveries)."""

    __slots__ = ("attempt", "epoch", "message", "offset", "partition", "state", "timer", "tp")

    def __init__(self, tp: Any, offset: int, epoch: int, message: Message) -> None:
        self.tp = tp
        self.partition: int = tp.partition
        self.offset = offset
        self.epoch = epoch
        self.message = message
        self.attempt = 1
        self.state = QUEUED
        self.timer: asyncio.TimerHandle | None = None


Runner = Callable[[Item], Coroutine[Any, Any, None]]


class Dispatcher:
    def __init__(self, run: Runner, *, max_in_flight: int, ordered: bool, name: str) -> None:
        self._run = run
        self._max = max(1, max_in_flight)
        self._ordered = ordered
        self._name = name
        self._ready: deque[Item] = deque()
        self._waiting: dict[str, deque[Item]] = {}  # ordered: next items of a busy key
        self._owner: dict[str, Item] = {}  # ordered: the item a key waits for
        self.live: set[Item] = set()  # every item not yet settled (queued, running, held)
        self.running = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self._changed = _Signal()  # something was settled, finished or dropped
        self._room = _Signal()  # fired once at most _room_at items are live
        self._room_at = -1
        self._pump_soon = False  # a pump is scheduled for the next event-loop turn
        self.closed = False

    # -- intake ---------------------------------------------------------------------------------

    def add(self, item: Item) -> None:
        self.live.add(item)
        key = item.message.key
        if self._ordered and key is not None:
            if key in self._owner:
                queue = self._waiting.get(key)
                if queue is None:
                    queue = self._waiting[key] = deque()
                queue.append(item)
                return
            self._owner[key] = item
        self._ready.append(item)

    def pump(self) -> None:
        """Start handler tasks for ready items while there is room."""
        if self.closed:
            return
        ready = self._ready
        loop: asyncio.AbstractEventLoop | None = None
        while ready and self.running < self._max:
            item = ready.popleft()
            if item.state != QUEUED:
                continue
            item.state = RUNNING
            self.running += 1
            loop = loop or asyncio.get_running_loop()
            task = loop.create_task(self._handle(item), name=f"{self._name}:{item.offset}")
            self.tasks.add(task)
            task.add_done_callback(self._finished)

    async def _handle(self, item: Item) -> None:
        """Run ``item``, then (up to ``_INLINE`` times) an item that became ready meanwhile,
        e.g. the next record of the key it released: back to back in this task and slot, so a
        key's chain costs no task and no event-loop turn per record."""
        budget = _INLINE
        ready = self._ready
        current: Item | None = item
        while current is not None:
            await self._run(current)
            current = None
            while budget and ready and not self.closed:
                candidate = ready.popleft()
                if candidate.state == QUEUED:
                    budget -= 1
                    candidate.state = RUNNING
                    current = candidate
                    break

    def _deferred_pump(self) -> None:
        self._pump_soon = False
        self.pump()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.running -= 1
        self.pump()
        self._notify()

    # -- settlement -----------------------------------------------------------------------------

    def done(self, item: Item) -> None:
        """Acked or rejected: forget it and let its key go on."""
        if item.state in (DONE, DROPPED):
            return
        item.state = DONE
        self.live.discard(item)
        self._release_key(item)
        self._notify()

    def redeliver(self, item: Item, delay: float | None) -> None:
        """Nacked: hand it over again (at the head of its key), after ``delay`` if given."""
        if item.state in (DONE, DROPPED):
            return
        item.attempt += 1
        keyed = self._ordered and item.message.key is not None
        if delay and delay > 0:
            item.state = HELD
            if not keyed:  # unordered: the key need not wait while the delay runs
                self._release_key(item)
            loop = asyncio.get_running_loop()
            item.timer = loop.call_later(delay, self._wake_held, item)
        else:
            item.state = QUEUED
            self._ready.appendleft(item)
            self.pump()
        self._notify()

    def _wake_held(self, item: Item) -> None:
        item.timer = None
        if item.state != HELD:
            return
        item.state = QUEUED
        self._ready.appendleft(item)
        self.pump()

    def _release_key(self, item: Item) -> None:
        key = item.message.key
        if not self._ordered or key is None or self._owner.get(key) is not item:
            return
        queue = self._waiting.get(key)
        while queue:
            nxt = queue.popleft()
            if nxt.state == QUEUED:
                self._owner[key] = nxt
                self._ready.append(nxt)
                if not queue:
                    del self._waiting[key]
                # Settled from a handler task (the rule), it runs the successor itself if it
                # ends in this turn; if it keeps working, or the settlement came from elsewhere,
                # the successor starts on the next turn. (Telling the two apart costs more,
                # per record, than the rare turn it would save.)
                if not self._pump_soon:
                    self._pump_soon = True
                    asyncio.get_running_loop().call_soon(self._deferred_pump)
                return
        self._waiting.pop(key, None)
        del self._owner[key]

    # -- partitions going away ------------------------------------------------------------------

    def running_of(self, tps: Iterable[Any]) -> int:
        wanted = set(tps)
        return sum(1 for item in self.live if item.state == RUNNING and item.tp in wanted)

    def drop(self, tps: Iterable[Any]) -> int:
        """Forget every unsettled item of ``tps`` (their partitions were revoked): the new
        owner reads them again from the committed offset. Running handlers finish on their own,
        but their settlement no longer counts here."""
        wanted = set(tps)
        gone = [item for item in self.live if item.tp in wanted]
        for item in gone:
            item.state = DROPPED
            if item.timer is not None:
                item.timer.cancel()
                item.timer = None
            self.live.discard(item)
        if gone:
            for key in [k for k, owner in self._owner.items() if owner.tp in wanted]:
                del self._owner[key]
            for key, queue in list(self._waiting.items()):
                kept = deque(i for i in queue if i.tp not in wanted)
                if not kept:
                    del self._waiting[key]
                    continue
                self._waiting[key] = kept
                if key not in self._owner:
                    head = kept.popleft()
                    self._owner[key] = head
                    self._ready.append(head)
                    if not kept:
                        del self._waiting[key]
            self.pump()
            self._notify()
        return len(gone)

    def close(self) -> list[asyncio.Task[None]]:
        """Stop handing over; cancel timers and running handlers (returned to await)."""
        self.closed = True
        for item in self.live:
            if item.timer is not None:
                item.timer.cancel()
                item.timer = None
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        self._notify()
        return tasks

    # -- waiting ----------------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.fire()
        if len(self.live) <= self._room_at:
            self._room.fire()

    async def changed(self, within: float) -> None:
        """Wait until something was settled, finished or dropped (or ``within`` s passed)."""
        await self._changed.wait(within)

    async def room(self, live_at_most: int, within: float) -> None:
        """Wait until at most ``live_at_most`` items are unsettled (or ``within`` s passed):
        the fetcher refills a full buffer in chunks, not one record per settlement."""
        if len(self.live) <= live_at_most or self.closed:
            return
        self._room_at = live_at_most
        await self._room.wait(within)


class _Signal:
    """A wake-up any number of waiters share, each with its own time limit; re-armed on fire."""

    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    def fire(self) -> None:
        future, self._future = self._future, None
        if future is not None and not future.done():
            future.set_result(None)

    async def wait(self, within: float) -> None:
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        # not asyncio.wait_for: on 3.11 it can swallow a cancellation arriving with the wake-up
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await asyncio.shield(self._future)
