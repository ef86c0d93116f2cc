"""A Redis-backed :class:`DLQStore` (``redis.asyncio``, imported lazily): dead letters survive the
process and every DLQ handler / CLI sharing the prefix sees the same entries.

Layout under ``prefix``: ``entry:{id}`` is a hash (``m`` msgpack-encoded message, ``t`` arrival
time, ``v`` version), ``index`` a sorted set of ids by arrival time, ``version`` a counter.
The version-checked delete is one Lua script, so a recovery never removes an entry that came
back to the DLQ meanwhile.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from ..message import Message
from .dlq_store import DeadLetterEntry

if TYPE_CHECKING:
    from redis.asyncio import Redis

_DELETE = """
local v = redis.call('HGET', KEYS[1], 'v')
if not v then return 0 end
if ARGV[1] ~= '' and v ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
"""

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


class RedisDLQStore:
    def __init__(self, url: str | None = None, *, client: Redis | None = None,
                 prefix: str = "sagamesh:dlq:") -> None:
        if (url is None) == (client is None):
            raise ValueError("give exactly one of url or client")
        self._owns = client is None
        if client is None:
            from redis.asyncio import Redis

            client = Redis.from_url(str(url))
        self._redis: Any = client
        self.prefix = prefix
        self._index = prefix + "index"
        self._delete = self._redis.register_script(_DELETE)

    def _key(self, message_id: str) -> str:
        return f"{self.prefix}entry:{message_id}"

    async def put(self, entry: DeadLetterEntry) -> DeadLetterEntry:
        entry.version = int(await self._redis.incr(self.prefix + "version"))
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._key(entry.id), mapping={
                "m": _encoder.encode(entry.message), "t": repr(entry.received_at),
                "v": str(entry.version)})
            pipe.zadd(self._index, {entry.id: entry.received_at})
            await pipe.execute()
        return entry

    @staticmethod
    def _entry(raw: dict[bytes, bytes]) -> DeadLetterEntry | None:
        if not raw or b"m" not in raw:
            return None
        return DeadLetterEntry(_decoder.decode(raw[b"m"]), float(raw[b"t"]), int(raw[b"v"]))

    async def get(self, message_id: str) -> DeadLetterEntry | None:
        return self._entry(await self._redis.hgetall(self._key(message_id)))

    async def list(self) -> list[DeadLetterEntry]:
        ids = await self._redis.zrange(self._index, 0, -1)
        if not ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for raw_id in ids:
                pipe.hgetall(self._key(raw_id.decode()))
            rows = await pipe.execute()
        return [e for e in map(self._entry, rows) if e is not None]

    async def delete(self, message_id: str, *, version: int | None = None) -> bool:
        done = await self._delete(keys=[self._key(message_id), self._index],
                                  args=["" if version is None else str(version), message_id])
        return bool(done)

    async def close(self) -> None:
        if self._owns:
            await self._redis.aclose()
