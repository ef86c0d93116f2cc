"""Idempotency stores: remember which (event, handler) pairs were processed successfully so a
redelivered or republished duplicate is skipped. Keys are marked only after success."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from .._durations import Duration, require_seconds


@runtime_checkable
class IdempotencyStore(Protocol):
    async def contains(self, key: str) -> bool: ...

    async def add(self, key: str) -> None: ...

    async def close(self) -> None: ...


class MemoryIdempotencyStore:
    """In-process, bounded by ``ttl`` (seconds or timedelta) and ``max_keys`` (oldest evicted).

    All keys share one TTL, so insertion order is expiry order and eviction is O(1) per key.
    """

    def __init__(self, ttl: Duration = 3600.0, *, max_keys: int = 1_000_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = require_seconds(ttl)
        if self.ttl <= 0:
            raise ValueError("ttl must be > 0")
        self.max_keys = max_keys
        self._clock = clock
        self._keys: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        self._expire(self._clock())
        return len(self._keys)

    def _expire(self, now: float) -> None:
        keys = self._keys
        while keys:
            key, expires = next(iter(keys.items()))
            if expires > now:
                break
            del keys[key]

    async def contains(self, key: str) -> bool:
        expires = self._keys.get(key)
        if expires is None:
            return False
        if expires <= self._clock():
            self._expire(self._clock())
            return False
        return True

    async def add(self, key: str) -> None:
        now = self._clock()
        self._expire(now)
        keys = self._keys
        keys.pop(key, None)
        keys[key] = now + self.ttl
        while len(keys) > self.max_keys:
            keys.popitem(last=False)

    async def close(self) -> None:
        self._keys.clear()
