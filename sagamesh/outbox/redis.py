"""The Redis outbox: a stream written atomically with the saga state by
:class:`~sagamesh.saga.storage.redis.RedisStateStorage` (same Lua script), relayed to a broker.

Meets the publisher's :class:`~sagamesh.publishing.outbox.Outbox` protocol. Stream entry ids
(``<ms>-<seq>``) map to integers as ``ms * 1_000_000 + seq`` so the relay can order and ack them;
sent entries are deleted (XDEL). Only the worker holding the leader key (``SET NX PX``, renewed on
every poll) returns records, so one saga's messages leave in order; when a leader dies its key
expires after ``leader_ttl`` and a standby takes over.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from ..errors import ConfigError, TransactionError
from ..message import Message
from ..saga.storage.records import encode
from ..saga.storage.redis import honour_cancel

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from ..publishing.outbox import OutboxRecord

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_SEQ = 1_000_000
_message_decoder = msgspec.json.Decoder(Message)


def _to_int(entry_id: bytes | str) -> int:
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, seq = raw.split("-")
    return int(ms) * _SEQ + int(seq)


def _to_entry(value: int) -> str:
    return f"{value // _SEQ}-{value % _SEQ}"


class RedisOutbox:
    """``url`` or ``client``; ``prefix`` must equal the storage's so both use one stream."""

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Redis | None = None,
        prefix: str = "sagamesh",
        leader_ttl: float = 5.0,
    ) -> None:
        if (url is None) == (client is None):
            raise ConfigError("pass exactly one of url or client", field="url")
        if client is None:
            import redis.asyncio as aioredis

            client = aioredis.Redis.from_url(str(url))
            self._owns_client = True
        else:
            self._owns_client = False
        self._redis: Redis = client
        self.stream = f"{prefix}:outbox"
        self._leader_key = f"{prefix}:outbox:leader"
        self._token = uuid.uuid4().hex
        self._ttl_ms = max(100, int(leader_ttl * 1000))
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self.added = 0
        self.sent = 0

    async def add(self, tx_id: str, messages: Sequence[Message]) -> None:
        """Append all messages in one MULTI/EXEC (all or none)."""
        bad = [m for m in messages if not isinstance(m, Message)]
        if bad:
            raise TransactionError(f"outbox takes Message objects, got {type(bad[0]).__name__}")
        if not messages:
            return
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                for m in messages:
                    pipe.xadd(self.stream, {"m": encode(m), "tx": tx_id})
                await honour_cancel(pipe.execute())
        except Exception as exc:
            raise TransactionError(f"outbox write of {tx_id} failed: {exc}") from exc
        self.added += len(messages)

    async def is_leader(self) -> bool:
        return bool(await honour_cancel(
            self._renew(keys=[self._leader_key], args=[self._token, self._ttl_ms])
        ))

    async def pending(self, limit: int) -> Sequence[OutboxRecord]:
        from ..publishing.outbox import OutboxRecord

        if not await self.is_leader():
            return []
        entries: Any = await honour_cancel(self._redis.xrange(self.stream, count=limit))
        out = []
        for entry_id, fields in entries:
            tx = fields.get(b"tx", b"")
            out.append(
                OutboxRecord(
                    id=_to_int(entry_id),
                    tx_id=tx.decode() if isinstance(tx, bytes) else str(tx),
                    message=_message_decoder.decode(fields[b"m"]),
                )
            )
        return out

    async def mark_sent(self, ids: Sequence[int]) -> None:
        if ids:
            entries = [_to_entry(i) for i in ids]
            deleted = await honour_cancel(self._redis.xdel(self.stream, *entries))
            self.sent += int(deleted)

    async def unsent_count(self) -> int:
        return int(await honour_cancel(self._redis.xlen(self.stream)))

    async def close(self) -> None:
        await self._release(keys=[self._leader_key], args=[self._token])
        if self._owns_client:
            await self._redis.aclose()
