"""The priority dispatcher: grants a bounded number of execution slots, highest priority first,
and with per-key ordering never lets two deliveries of one key (saga) run out of order.

Each delivery calls ``await acquire(key, priority)`` in its own task, runs, then ``release(key)``.
When a slot is free and nothing waits, acquire returns at once (no queueing, no task switch).
Otherwise the caller waits in the buffer, which is bounded by whoever creates the waiting tasks:
the consumer's subscriptions never hold more than ``max_in_flight`` unsettled deliveries each.
(Waiting for "room" here would let a woken waiter be overtaken by a newcomer of its own key.)
A key has a lane: while one of its deliveries
runs or is next in line, later ones wait in the lane in arrival order and become eligible only
when the previous one is released. Only eligible deliveries sit in the priority heap, so
priority never overtakes order within a saga while different sagas proceed concurrently.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque

from ..errors import SagameshError

_Entry = tuple[int, int, "str | None", "asyncio.Future[None]"]


class DispatcherDrainedError(SagameshError):
    """The dispatcher was drained (shutdown) before this delivery's turn came."""


class PriorityDispatcher:
    __slots__ = (
        "_counter",
        "_heap",
        "_idle",
        "_lanes",
        "max_pending",
        "ordered",
        "pending",
        "running",
        "slots",
    )

    def __init__(self, slots: int = 16, *, ordered: bool = True) -> None:
        if slots < 1:
            raise ValueError("slots must be >= 1")
        self.slots = slots
        self.ordered = ordered
        self.pending = 0  # waiting for a slot
        self.max_pending = 0  # high-water mark of ``pending``
        self.running = 0  # holding a slot
        self._heap: list[_Entry] = []
        self._lanes: dict[str, deque[_Entry]] = {}
        self._counter = itertools.count()
        self._idle: asyncio.Event | None = None

    def try_acquire(self, key: str | None = None) -> bool:
        """A slot now, when one is free and nothing is ahead (no coroutine, no waiting)."""
        if self.running >= self.slots or self._heap:
            return False
        if self.ordered and key is not None:
            lanes = self._lanes
            if key in lanes:
                return False
            lanes[key] = deque()
        self.running += 1
        return True

    async def acquire(self, key: str | None = None, priority: int = 0) -> None:
        """Wait for this delivery's turn; raises :class:`DispatcherDrainedError` on drain."""
        if self.try_acquire(key):
            return
        lanes = self._lanes
        ordered = self.ordered and key is not None
        busy = ordered and key in lanes
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (-priority, next(self._counter), key, fut)
        self.pending += 1
        if self.pending > self.max_pending:
            self.max_pending = self.pending
        if busy:
            lanes[key].append(entry)  # type: ignore[index]
        else:
            if ordered:
                lanes[key] = deque()  # type: ignore[index]
            heapq.heappush(self._heap, entry)
            self._grant()
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # granted, but we will not run
                self.release(key)
            else:  # still waiting: its entry is skipped when reached
                fut.cancel()
                self.pending -= 1
            raise

    def release(self, key: str | None = None) -> None:
        """The delivery that acquired under ``key`` is settled: grant the next ones."""
        self.running -= 1
        if self.ordered and key is not None:
            self._advance(key)
        self._grant()
        if self._idle is not None and not self.pending and not self.running:
            self._idle.set()

    def _advance(self, key: str) -> None:
        """Make the next live delivery of ``key``'s lane eligible, or drop the lane."""
        lane = self._lanes.get(key)
        if lane is None:
            return
        while lane:
            entry = lane.popleft()
            if not entry[3].cancelled():
                heapq.heappush(self._heap, entry)
                return
        del self._lanes[key]

    def _grant(self) -> None:
        heap = self._heap
        while heap and self.running < self.slots:
            entry = heapq.heappop(heap)
            fut = entry[3]
            if fut.cancelled():  # its task went away while waiting
                if self.ordered and entry[2] is not None:
                    self._advance(entry[2])
                continue
            self.pending -= 1
            self.running += 1
            fut.set_result(None)

    def drain(self) -> int:
        """Fail every waiting delivery with :class:`DispatcherDrainedError` (shutdown);
        returns how many. Running deliveries keep their slots until released."""
        count = 0
        error = DispatcherDrainedError("consumer is shutting down")
        entries = list(self._heap)
        for lane in self._lanes.values():
            entries.extend(lane)
            lane.clear()
        for _, _, key, _fut in self._heap:
            if key is not None:
                self._lanes.pop(key, None)  # only eligible, not running: no lane left
        self._heap.clear()
        for entry in entries:
            fut = entry[3]
            if not fut.done():
                fut.set_exception(error)
                count += 1
        self.pending = 0
        if self._idle is not None and not self.running:
            self._idle.set()
        return count

    async def wait_idle(self) -> None:
        """Return once nothing waits and nothing runs."""
        if not self.pending and not self.running:
            return
        self._idle = asyncio.Event()
        await self._idle.wait()
