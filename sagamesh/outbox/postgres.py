"""The PostgreSQL outbox: messages committed in the same transaction as the writes that caused
them (saga state, or the user's own business rows), relayed to a broker at least once.

Meets the publisher's :class:`~sagamesh.publishing.outbox.Outbox` protocol, so
:class:`~sagamesh.publishing.outbox.OutboxRelay` drives it. Many workers may each run a relay on
the same table: only the one holding a session advisory lock returns rows from :meth:`pending`
(the others stand by and take over when its connection drops, e.g. when its process dies), so
messages of one key leave in insertion order. That connection also LISTENs for the
``pg_notify`` each insert sends on commit, so the relay wakes at once instead of polling.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, TransactionError
from ..message import Message
from ..saga.storage.records import decode_json
from .schema import insert_messages, notify_channel, outbox_ddl, quote_ident

if TYPE_CHECKING:
    import asyncpg

    from ..publishing.outbox import OutboxRecord


class PostgresOutbox:
    """``dsn`` or ``pool``; ``schema`` is shared with :class:`PostgresStateStorage` when the
    saga coordinator writes its events through the storage (same table)."""

    def __init__(
        self,
        dsn: str | None = None,
        *,
        pool: asyncpg.Pool[Any] | None = None,
        schema: str = "sagamesh",
        leader_dsn: str | None = None,
    ) -> None:
        if (dsn is None) == (pool is None):
            raise ConfigError("pass exactly one of dsn or pool", field="dsn")
        self.schema = schema
        self._s = quote_ident(schema, field="schema")
        self._dsn = dsn
        self._leader_dsn = leader_dsn or dsn
        self._pool: asyncpg.Pool[Any] | None = pool
        self._owns_pool = pool is None
        self._ready = False
        self._lock = asyncio.Lock()
        self._leader: asyncpg.Connection[Any] | None = None
        # the leader connection runs one query at a time (asyncpg refuses a second one)
        self._leading = asyncio.Lock()
        self._listeners: list[Callable[[], None]] = []
        self.added = 0
        self.sent = 0

    async def pool(self) -> asyncpg.Pool[Any]:
        if self._ready and self._pool is not None:
            return self._pool
        async with self._lock:
            if self._pool is None:
                import asyncpg

                self._pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=4)
            if not self._ready:
                async with self._pool.acquire() as conn, conn.transaction():
                    await conn.execute(
                        "SELECT pg_advisory_xact_lock(hashtext($1))", f"sagamesh:{self._s}"
                    )
                    for sql in outbox_ddl(self.schema):
                        await conn.execute(sql)
                self._ready = True
        return self._pool

    async def migrate(self) -> None:
        """Create the schema and outbox table if missing (also done on first use)."""
        await self.pool()

    def on_notify(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever a transaction that added messages commits (while this
        outbox is the relay leader); used to wake the relay instead of polling."""
        self._listeners.append(callback)

    # -- writing ----------------------------------------------------------------------------

    async def add(
        self,
        tx_id: str,
        messages: Sequence[Message],
        *,
        connection: asyncpg.Connection[Any] | None = None,
    ) -> None:
        """Store ``messages`` all-or-none. With ``connection`` (the caller's, typically inside
        ``async with connection.transaction()``) they commit or roll back with the caller's own
        writes; without it they commit on their own."""
        bad = [m for m in messages if not isinstance(m, Message)]
        if bad:
            raise TransactionError(f"outbox takes Message objects, got {type(bad[0]).__name__}")
        if not messages:
            return
        if connection is not None:
            await self.pool()  # the table exists before the caller's transaction uses it
            async with connection.transaction():
                await insert_messages(connection, self.schema, tx_id, messages)
        else:
            pool = await self.pool()
            try:
                async with pool.acquire() as conn, conn.transaction():
                    await insert_messages(conn, self.schema, tx_id, messages)
            except Exception as exc:
                raise TransactionError(f"outbox write of {tx_id} failed: {exc}") from exc
        self.added += len(messages)

    # -- relaying ---------------------------------------------------------------------------

    async def _lead(self) -> bool:
        """Hold the relay lock on a dedicated connection (released by Postgres if we die)."""
        import asyncpg

        leader = self._leader
        if leader is not None and not leader.is_closed():
            return True
        self._leader = None
        await self.pool()
        conn: Any = await asyncpg.connect(self._leader_dsn) if self._leader_dsn else None
        if conn is None:  # only a pool was given: borrow a connection for good
            assert self._pool is not None
            conn = await self._pool.acquire()
        got = await conn.fetchval(
            "SELECT pg_try_advisory_lock(hashtext($1))", f"sagamesh-relay:{self._s}"
        )
        if not got:
            await self._drop(conn)
            return False
        if self._listeners:
            await conn.add_listener(notify_channel(self.schema), self._notified)
        self._leader = conn
        return True

    def _notified(self, *_: object) -> None:
        for callback in self._listeners:
            callback()

    async def _drop(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            if self._leader_dsn:
                await conn.close()
            else:  # a pooled connection must not keep the session lock
                assert self._pool is not None
                await conn.execute("SELECT pg_advisory_unlock_all()")
                await self._pool.release(conn)

    async def pending(self, limit: int) -> Sequence[OutboxRecord]:
        """Oldest unsent records, for the relay leader only (others get none)."""
        from ..publishing.outbox import OutboxRecord

        async with self._leading:
            if not await self._lead():
                return []
            assert self._leader is not None
            try:
                rows = await self._leader.fetch(
                    f"SELECT id, tx_id, message_id, topic, key, body, headers "
                    f"FROM {self._s}.outbox WHERE sent_at IS NULL ORDER BY id LIMIT $1",
                    limit,
                )
            except Exception:
                await self._drop(self._leader)
                self._leader = None
                raise
        return [
            OutboxRecord(
                id=r["id"],
                tx_id=r["tx_id"],
                message=Message(
                    id=r["message_id"],
                    topic=r["topic"],
                    body=bytes(r["body"]),
                    key=r["key"],
                    headers=decode_json(r["headers"]) or {},
                ),
            )
            for r in rows
        ]

    async def mark_sent(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        pool = await self.pool()
        status = await pool.execute(
            f"UPDATE {self._s}.outbox SET sent_at = clock_timestamp(), attempts = attempts + 1 "
            "WHERE id = ANY($1::bigint[]) AND sent_at IS NULL",
            list(ids),
        )
        self.sent += int(status.split()[-1])

    async def unsent_count(self) -> int:
        pool = await self.pool()
        count: int = await pool.fetchval(
            f"SELECT count(*) FROM {self._s}.outbox WHERE sent_at IS NULL"
        )
        return count

    async def purge_sent(self, older_than: datetime) -> int:
        """Delete rows sent before ``older_than`` (the table is a log until purged)."""
        pool = await self.pool()
        status = await pool.execute(
            f"DELETE FROM {self._s}.outbox WHERE sent_at IS NOT NULL AND sent_at < $1",
            older_than,
        )
        return int(status.split()[-1])

    async def close(self) -> None:
        leader, self._leader = self._leader, None
        if leader is not None:
            await self._drop(leader)
        if self._owns_pool and self._pool is not None:
            await self._pool.close()
            self._pool = None
            self._ready = False
