"""Redis-backed idempotency store (``redis.asyncio``, imported lazily): shared by every consumer
instance of a group, so a duplicate is skipped whichever instance receives it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._durations import Duration, require_seconds

if TYPE_CHECKING:
    from redis.asyncio import Redis


class RedisIdempotencyStore:
    """Keys are ``prefix + key`` with a TTL; pass ``url`` or an existing ``client``
    (a client passed in is not closed by :meth:`close`)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Redis | None = None,
        prefix: str = "sagamesh:idempotency:",
        ttl: Duration = 3600.0,
    ) -> None:
        if (url is None) == (client is None):
            raise ValueError("give exactly one of url or client")
        self.ttl = require_seconds(ttl)
        if self.ttl <= 0:
            raise ValueError("ttl must be > 0")
        self.prefix = prefix
        self._owns = client is None
        if client is None:
            from redis.asyncio import Redis

            client = Redis.from_url(str(url))
        self._redis: Any = client
        self._ttl_ms = max(1, int(self.ttl * 1000))

    async def contains(self, key: str) -> bool:
        return bool(await self._redis.exists(self.prefix + key))

    async def add(self, key: str) -> None:
        await self._redis.set(self.prefix + key, b"1", px=self._ttl_ms)

    async def close(self) -> None:
        if self._owns:
            await self._redis.aclose()
