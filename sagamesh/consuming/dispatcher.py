"""The priority dispatcher: a bounded buffer that hands work to workers highest-priority first
and, with per-key ordering, never lets two items of one key (saga) run out of order.

Each key has a lane: while an item of the key is eligible or running, later items of the key
wait in its lane and become eligible, in arrival order, only when the previous one is marked
:meth:`done`. Only eligible items sit in the priority heap, so priority never overtakes order
within a saga while different sagas proceed concurrently.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class PriorityDispatcher(Generic[T]):
    __slots__ = (
        "_counter",
        "_getters",
        "_heap",
        "_idle",
        "_lanes",
        "_putters",
        "capacity",
        "ordered",
        "pending",
        "running",
    )

    def __init__(self, capacity: int = 256, *, ordered: bool = True) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.ordered = ordered
        self.pending = 0  # buffered, not yet handed to a worker
        self.running = 0  # handed out, not yet done
        self._heap: list[tuple[int, int, str | None, T]] = []
        self._lanes: dict[str, deque[tuple[int, int, str | None, T]]] = {}
        self._counter = itertools.count()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()
        self._idle: asyncio.Event | None = None

    def __len__(self) -> int:
        return self.pending

    @property
    def full(self) -> bool:
        return self.pending >= self.capacity

    async def put(self, item: T, *, priority: int = 0, key: str | None = None) -> None:
        """Buffer ``item``; waits while the buffer is full (backpressure)."""
        while self.pending >= self.capacity:
            waiter = asyncio.get_running_loop().create_future()
            self._putters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake(self._putters)
                raise
        self.put_nowait(item, priority=priority, key=key)

    def put_nowait(self, item: T, *, priority: int = 0, key: str | None = None) -> None:
        """Buffer ``item`` even beyond capacity (callers that bound intake themselves)."""
        entry = (-priority, next(self._counter), key, item)
        self.pending += 1
        if self.ordered and key is not None:
            lane = self._lanes.get(key)
            if lane is not None:  # an item of this key is eligible or running: wait behind it
                lane.append(entry)
                return
            self._lanes[key] = deque()
        heapq.heappush(self._heap, entry)
        self._wake(self._getters)

    async def get(self) -> tuple[T, str | None]:
        """The highest-priority eligible item (FIFO among equals) and its key."""
        heap = self._heap
        while not heap:
            waiter = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake(self._getters)
                raise
        _, _, key, item = heapq.heappop(heap)
        self.pending -= 1
        self.running += 1
        self._wake(self._putters)
        return item, key

    def done(self, key: str | None) -> None:
        """The item handed out under ``key`` is settled: the key's next item becomes eligible."""
        self.running -= 1
        if self.ordered and key is not None:
            lane = self._lanes.get(key)
            if lane is not None:
                if lane:
                    heapq.heappush(self._heap, lane.popleft())
                    self._wake(self._getters)
                else:
                    del self._lanes[key]
        if self._idle is not None and not self.pending and not self.running:
            self._idle.set()

    def drain_pending(self) -> list[T]:
        """Remove and return every buffered item not yet handed out (for shutdown)."""
        items = [entry[3] for entry in self._heap]
        for lane in self._lanes.values():
            items.extend(entry[3] for entry in lane)
            lane.clear()
        # Keys whose head was only eligible lose their lane; keys with a running item keep an
        # empty one so that ``done`` stays consistent.
        for _, _, key, _ in self._heap:
            if key is not None:
                self._lanes.pop(key, None)
        self._heap.clear()
        self.pending = 0
        while self._putters:
            self._wake(self._putters)
        if self._idle is not None and not self.running:
            self._idle.set()
        return items

    async def wait_idle(self) -> None:
        """Return once nothing is buffered or running."""
        if not self.pending and not self.running:
            return
        self._idle = asyncio.Event()
        await self._idle.wait()

    @staticmethod
    def _wake(waiters: deque[asyncio.Future[None]]) -> None:
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
