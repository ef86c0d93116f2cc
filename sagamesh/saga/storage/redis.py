"""Saga state in Redis (redis-py asyncio): one hash per saga, sorted-set indexes, Lua CAS writes.

Layout under ``prefix`` (default ``sagamesh``):

* ``{prefix}:saga:{id}``  hash ``v`` (version) and ``body`` (the JSON record)
* ``{prefix}:steps:{id}`` hash step id -> JSON step record
* ``{prefix}:active``     zset of non-terminal saga ids by ``created_at``
* ``{prefix}:timeouts``   zset of non-terminal saga ids by ``timeout_at``
* ``{prefix}:ended``      zset of terminal saga ids by end time (what cleanup scans)
* ``{prefix}:outbox``     stream of outbox messages written atomically with the state

Every saga write is one Lua script that compares the stored version with the one the caller read
and, only when equal, writes the record, moves the id between the indexes and appends the
transition's outbox messages: state, indexes and events change together or not at all.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from ...errors import ConcurrencyConflictError, ConfigError, SagaNotFoundError
from ...events import SagaError
from ...message import Message
from ..state import SagaInstance, SagaState, StepState, utcnow
from .base import SagaFilter
from .records import decode_saga, decode_step, encode, encode_saga, encode_step, epoch

if TYPE_CHECKING:
    from redis.asyncio import Redis

_CAS = """
local cur = redis.call('HGET', KEYS[1], 'v')
local expected = tonumber(ARGV[1])
if cur then
  if tonumber(cur) ~= expected then return {0, tonumber(cur)} end
elseif expected ~= 0 then
  return {-1, 0}
end
local id = ARGV[3]
redis.call('HSET', KEYS[1], 'v', expected + 1, 'body', ARGV[2])
if ARGV[6] == '1' then
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZADD', KEYS[4], ARGV[7], id)
else
  redis.call('ZADD', KEYS[2], ARGV[4], id)
  if ARGV[5] ~= '' then redis.call('ZADD', KEYS[3], ARGV[5], id)
  else redis.call('ZREM', KEYS[3], id) end
  redis.call('ZREM', KEYS[4], id)
end
for i = 8, #ARGV do
  redis.call('XADD', KEYS[5], '*', 'm', ARGV[i])
end
return {1, expected + 1}
"""

_DELETE = """
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
return 1
"""

_LEASE_RETRIES = 8

T = TypeVar("T")


async def honour_cancel(call: Awaitable[T]) -> T:
    """Await a redis-py call without losing a cancellation that arrives meanwhile.

    redis-py sends with ``asyncio.wait_for``, which on Python 3.11 returns the result and drops
    the caller's cancellation when both happen in the same loop turn; a cancelled loop that
    talks to Redis would then never stop. A cancel request counted during the call is re-raised.
    """
    task = asyncio.current_task()
    before = task.cancelling() if task is not None else 0
    result = await call
    if task is not None and task.cancelling() > before:
        raise asyncio.CancelledError
    return result


class RedisStateStorage:
    """The :class:`~sagamesh.saga.storage.base.StateStorage` protocol over Redis.

    ``url`` or ``client`` (a ``redis.asyncio.Redis``; a client passed in is not closed by
    :meth:`close`). ``prefix`` namespaces every key so several apps (or test runs) share a server.
    Lease expiry is judged by the coordinators' clocks (keep them NTP-synced).
    """

    supports_outbox = True

    def __init__(
        self, url: str | None = None, *, client: Redis | None = None, prefix: str = "sagamesh"
    ) -> None:
        if (url is None) == (client is None):
            raise ConfigError("pass exactly one of url or client", field="url")
        if not prefix or any(c.isspace() for c in prefix):
            raise ConfigError(f"invalid key prefix {prefix!r}", field="prefix")
        if client is None:
            import redis.asyncio as aioredis

            client = aioredis.Redis.from_url(str(url))
            self._owns_client = True
        else:
            self._owns_client = False
        self._redis: Redis = client
        self.prefix = prefix
        self._active = f"{prefix}:active"
        self._timeouts = f"{prefix}:timeouts"
        self._ended = f"{prefix}:ended"
        self.outbox_stream = f"{prefix}:outbox"
        self._cas = client.register_script(_CAS)
        self._delete = client.register_script(_DELETE)

    @property
    def client(self) -> Redis:
        return self._redis

    def _saga_key(self, saga_id: str) -> str:
        return f"{self.prefix}:saga:{saga_id}"

    def _steps_key(self, saga_id: str) -> str:
        return f"{self.prefix}:steps:{saga_id}"

    # -- writes -----------------------------------------------------------------------------

    async def _write(
        self, saga: SagaInstance, expected: int, outbox: Sequence[Message] = ()
    ) -> int:
        stored = dataclasses.replace(saga, version=expected + 1)
        terminal = stored.is_terminal
        end = stored.end_time or stored.updated_at
        args: list[Any] = [
            expected,
            encode_saga(stored),
            saga.id,
            epoch(stored.created_at),
            "" if stored.timeout_at is None else epoch(stored.timeout_at),
            "1" if terminal else "0",
            epoch(end),
        ]
        args.extend(encode(m) for m in outbox)
        keys = [
            self._saga_key(saga.id), self._active, self._timeouts, self._ended, self.outbox_stream
        ]
        status, version = await honour_cancel(self._cas(keys=keys, args=args))
        if status == 1:
            return int(version)
        if status == -1:
            raise SagaNotFoundError(saga.id)
        raise ConcurrencyConflictError(
            f"saga {saga.id}: stored version {version}, write based on version {expected}"
        )

    async def save_saga(
        self, saga: SagaInstance, *, outbox_messages: Sequence[Message] = ()
    ) -> None:
        """Insert (version 0) or compare-and-set update; ``outbox_messages`` are appended to the
        outbox stream in the same atomic step (see :class:`~sagamesh.outbox.RedisOutboxRelay`)."""
        saga.version = await self._write(saga, saga.version, outbox_messages)

    async def update_saga_state(
        self,
        saga_id: str,
        state: SagaState,
        *,
        expected_version: int,
        error: SagaError | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> int:
        saga = await self.get_saga(saga_id)
        if saga is None:
            raise SagaNotFoundError(saga_id)
        if saga.version != expected_version:
            raise ConcurrencyConflictError(
                f"saga {saga_id}: stored version {saga.version}, expected {expected_version}"
            )
        saga.state = state
        if error is not None:
            saga.error = error
        if metadata:
            saga.metadata.update(metadata)
        saga.updated_at = utcnow()
        if state.is_terminal and saga.end_time is None:
            saga.end_time = saga.updated_at
        return await self._write(saga, expected_version)

    async def delete_saga(self, saga_id: str) -> None:
        keys = [
            self._saga_key(saga_id), self._steps_key(saga_id), self._active, self._timeouts,
            self._ended,
        ]
        await honour_cancel(self._delete(keys=keys, args=[saga_id]))

    async def save_step_state(self, step: StepState) -> None:
        await honour_cancel(
            self._redis.hset(self._steps_key(step.saga_id), step.step_id, encode_step(step))
        )

    # -- reads ------------------------------------------------------------------------------

    async def get_saga(self, saga_id: str) -> SagaInstance | None:
        version, body = await honour_cancel(
            self._redis.hmget(self._saga_key(saga_id), ["v", "body"])
        )
        if body is None:
            return None
        saga = decode_saga(body)
        saga.version = int(version or 0)
        return saga

    async def _get_many(self, ids: Sequence[Any]) -> list[SagaInstance]:
        if not ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for raw in ids:
                sid = raw.decode() if isinstance(raw, bytes) else raw
                pipe.hmget(self._saga_key(sid), ["v", "body"])
            rows = await honour_cancel(pipe.execute())
        out = []
        for version, body in rows:
            if body is None:  # deleted between the index read and this one
                continue
            saga = decode_saga(body)
            saga.version = int(version)
            out.append(saga)
        return out

    async def get_active_sagas(self, filter: SagaFilter | None = None) -> list[SagaInstance]:
        lo: float | str = "-inf"
        hi: float | str = "+inf"
        if filter is not None and filter.created_after is not None:
            lo = epoch(filter.created_after)
        if filter is not None and filter.created_before is not None:
            hi = epoch(filter.created_before)
        out: list[SagaInstance] = []
        page = 500
        start = 0
        while True:  # page through the index so a huge backlog never loads at once
            ids = await honour_cancel(
                self._redis.zrangebyscore(self._active, lo, hi, start=start, num=page)
            )
            for saga in await self._get_many(ids):
                if saga.is_terminal or (filter is not None and not filter.matches(saga)):
                    continue
                out.append(saga)
                if filter is not None and filter.limit is not None and len(out) >= filter.limit:
                    return out
            if len(ids) < page:
                return out
            start += page

    async def get_timeout_sagas(self, before: datetime) -> list[SagaInstance]:
        limit = epoch(before)
        ids = await honour_cancel(self._redis.zrangebyscore(self._timeouts, "-inf", limit))
        return [
            s
            for s in await self._get_many(ids)
            if not s.is_terminal and s.timeout_at is not None and epoch(s.timeout_at) <= limit
        ]

    async def get_step_states(self, saga_id: str) -> list[StepState]:
        raw = await honour_cancel(self._redis.hvals(self._steps_key(saga_id)))
        return sorted((decode_step(r) for r in raw), key=lambda s: s.step_index)

    async def cleanup_expired_sagas(self, older_than: datetime) -> int:
        ids = await honour_cancel(
            self._redis.zrangebyscore(self._ended, "-inf", epoch(older_than))
        )
        removed = 0
        for saga in await self._get_many(ids):
            if saga.is_terminal:
                await self.delete_saga(saga.id)
                removed += 1
        return removed

    # -- leases -----------------------------------------------------------------------------

    async def acquire_lease(self, saga_id: str, owner: str, ttl: float) -> SagaInstance | None:
        for _ in range(_LEASE_RETRIES):
            saga = await self.get_saga(saga_id)
            if saga is None:
                return None
            now = utcnow()
            held = (
                saga.lease_owner is not None
                and saga.lease_owner != owner
                and saga.lease_expires_at is not None
                and saga.lease_expires_at > now
            )
            if held:
                return None
            saga.lease_owner = owner
            saga.lease_expires_at = now + timedelta(seconds=ttl)
            try:
                saga.version = await self._write(saga, saga.version)
            except ConcurrencyConflictError:
                await asyncio.sleep(0)  # someone wrote meanwhile: judge the lease again
                continue
            except SagaNotFoundError:
                return None
            return saga
        return None

    async def release_lease(self, saga_id: str, owner: str) -> None:
        for _ in range(_LEASE_RETRIES):
            saga = await self.get_saga(saga_id)
            if saga is None or saga.lease_owner != owner:
                return
            saga.lease_owner = None
            saga.lease_expires_at = None
            try:
                await self._write(saga, saga.version)
                return
            except ConcurrencyConflictError:
                continue
            except SagaNotFoundError:
                return

    async def drop_prefix(self) -> int:
        """Delete every key under the prefix (tests and teardown of throwaway deployments)."""
        keys = [k async for k in self._redis.scan_iter(match=f"{self.prefix}:*", count=1000)]
        if keys:
            await self._redis.delete(*keys)
        return len(keys)

    async def close(self) -> None:
        if self._owns_client:
            await self._redis.aclose()
