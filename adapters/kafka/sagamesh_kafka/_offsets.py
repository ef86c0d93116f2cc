"""Commit points: a partition's offset is committed only once every earlier offset is settled."""

from __future__ import annotations

from collections import deque


class PartitionOffsets:
    """Offsets of one partition in arrival order, for one assignment epoch.

    ``committable`` is the next offset a restarted consumer must read: one past the longest
    settled prefix. Kafka commits are "everything before this offset is done", so a settled
    offset after an unsettled one waits (and is redelivered if the consumer dies first).
    """

    __slots__ = ("_pending", "_settled", "committable", "committed", "epoch")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self._pending: deque[int] = deque()
        self._settled: set[int] = set()
        self.committable: int | None = None
        self.committed: int | None = None

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, offset: int) -> bool:
        """Track a received offset; False if it does not come after every tracked one."""
        if self._pending and offset <= self._pending[-1]:
            return False
        if self.committable is not None and offset < self.committable:
            return False
        self._pending.append(offset)
        return True

    def settle(self, offset: int) -> None:
        pending, settled = self._pending, self._settled
        if not pending or pending[0] != offset:  # settled out of order: wait for the prefix
            settled.add(offset)
            return
        pending.popleft()  # in order (the common case): no round trip through the set
        done = offset
        while pending and pending[0] in settled:
            done = pending.popleft()
            settled.discard(done)
        self.committable = done + 1

    @property
    def dirty(self) -> bool:
        return self.committable is not None and self.committable != self.committed
