"""Saga state in PostgreSQL (asyncpg): typed columns, JSONB data, version-checked UPDATEs.

Every write is ``UPDATE ... WHERE id = $1 AND version = $n``: zero rows means the caller's copy
is stale (:class:`ConcurrencyConflictError`) or the saga is gone (:class:`SagaNotFoundError`).
Leases are taken in one UPDATE judged by the database clock, so coordinators on different hosts
agree on expiry. ``save_saga(..., outbox_messages=...)`` writes the transition's events into the
outbox table in the same transaction as the state (the transactional outbox).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ...errors import ConcurrencyConflictError, ConfigError, SagaNotFoundError
from ...events import SagaError
from ...message import Message
from ..state import TERMINAL_STATES, SagaInstance, SagaState, StepState, StepStatus
from .base import SagaFilter
from .records import decode_error, decode_json, encode_text

if TYPE_CHECKING:
    import asyncpg

SCHEMA_VERSION = 1
_TERMINAL = sorted(s.value for s in TERMINAL_STATES)
_TERMINAL_SQL = ", ".join(f"'{s}'" for s in _TERMINAL)

_SAGA_COLUMNS = (
    "id, definition_id, state, current_step, completed_steps, total_steps, data, result, error, "
    "start_time, end_time, created_at, updated_at, version, metadata, trace_id, timeout_at, "
    "lease_owner, lease_expires_at"
)


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _json(value: Any) -> str | None:
    return None if value is None else encode_text(value)


def _saga_from_row(row: Any) -> SagaInstance:
    return SagaInstance(
        id=row["id"],
        definition_id=row["definition_id"],
        state=SagaState(row["state"]),
        current_step=row["current_step"],
        completed_steps=row["completed_steps"],
        total_steps=row["total_steps"],
        data=decode_json(row["data"]),
        result=decode_json(row["result"]),
        error=decode_error(row["error"]),
        start_time=row["start_time"],
        end_time=row["end_time"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=row["version"],
        metadata=decode_json(row["metadata"]) or {},
        trace_id=row["trace_id"],
        timeout_at=row["timeout_at"],
        lease_owner=row["lease_owner"],
        lease_expires_at=row["lease_expires_at"],
    )


def _step_from_row(row: Any) -> StepState:
    return StepState(
        saga_id=row["saga_id"],
        step_id=row["step_id"],
        step_index=row["step_index"],
        status=StepStatus(row["status"]),
        attempt=row["attempt"],
        input=decode_json(row["input"]),
        output=decode_json(row["output"]),
        error=decode_error(row["error"]),
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        compensation_attempt=row["compensation_attempt"],
        compensation_error=decode_error(row["compensation_error"]),
    )


def _migrations(s: str) -> dict[int, list[str]]:
    """Schema version -> statements taking the schema from version-1 to version."""
    return {
        1: [
            f"""CREATE TABLE IF NOT EXISTS {s}.sagas (
                id text PRIMARY KEY,
                definition_id text NOT NULL,
                state text NOT NULL,
                current_step integer NOT NULL DEFAULT 0,
                completed_steps integer NOT NULL DEFAULT 0,
                total_steps integer NOT NULL DEFAULT 0,
                data jsonb,
                result jsonb,
                error jsonb,
                start_time timestamptz,
                end_time timestamptz,
                created_at timestamptz NOT NULL,
                updated_at timestamptz NOT NULL,
                version bigint NOT NULL,
                metadata jsonb NOT NULL DEFAULT '{{}}'::jsonb,
                trace_id text NOT NULL DEFAULT '',
                timeout_at timestamptz,
                lease_owner text,
                lease_expires_at timestamptz
            )""",
            f"CREATE INDEX IF NOT EXISTS sagas_state_idx ON {s}.sagas (state)",
            f"CREATE INDEX IF NOT EXISTS sagas_active_idx ON {s}.sagas (created_at) "
            f"WHERE state NOT IN ({_TERMINAL_SQL})",
            f"CREATE INDEX IF NOT EXISTS sagas_timeout_idx ON {s}.sagas (timeout_at) "
            f"WHERE timeout_at IS NOT NULL AND state NOT IN ({_TERMINAL_SQL})",
            f"CREATE INDEX IF NOT EXISTS sagas_ended_idx ON {s}.sagas "
            f"((coalesce(end_time, updated_at))) WHERE state IN ({_TERMINAL_SQL})",
            f"""CREATE TABLE IF NOT EXISTS {s}.saga_steps (
                saga_id text NOT NULL,
                step_id text NOT NULL,
                step_index integer NOT NULL,
                status text NOT NULL,
                attempt integer NOT NULL DEFAULT 0,
                input jsonb,
                output jsonb,
                error jsonb,
                started_at timestamptz,
                completed_at timestamptz,
                compensation_attempt integer NOT NULL DEFAULT 0,
                compensation_error jsonb,
                PRIMARY KEY (saga_id, step_id)
            )""",
        ],
    }


class PostgresStateStorage:
    """The :class:`~sagamesh.saga.storage.base.StateStorage` protocol over PostgreSQL.

    ``dsn`` or ``pool`` (an ``asyncpg.Pool``; a pool passed in is not closed by :meth:`close`).
    ``schema`` holds the ``sagas``, ``saga_steps`` and ``outbox`` tables; it is created and
    migrated by :meth:`migrate`, which also runs on first use (idempotent, serialized by an
    advisory lock so many workers may start at once). ``synchronous_commit=False`` stops
    waiting for the WAL flush on each write: a *worker* crash still loses nothing, a crash of the
    *database server* may lose the last fraction of a second of transitions (which recovery then
    re-runs with the same idempotency keys).
    """

    supports_outbox = True

    def __init__(
        self,
        dsn: str | None = None,
        *,
        pool: asyncpg.Pool[Any] | None = None,
        schema: str = "sagamesh",
        min_pool_size: int = 1,
        max_pool_size: int = 10,
        synchronous_commit: bool = True,
    ) -> None:
        from ...outbox.schema import quote_ident

        if (dsn is None) == (pool is None):
            raise ConfigError("pass exactly one of dsn or pool", field="dsn")
        self.schema = schema
        self._s = quote_ident(schema, field="schema")
        self._dsn = dsn
        self._pool: asyncpg.Pool[Any] | None = pool
        self._owns_pool = pool is None
        self._pool_sizes = (min_pool_size, max_pool_size)
        self._server_settings = {} if synchronous_commit else {"synchronous_commit": "off"}
        self._ready = False
        self._lock = asyncio.Lock()

    # -- setup ------------------------------------------------------------------------------

    async def pool(self) -> asyncpg.Pool[Any]:
        """The pool, created and the schema migrated on first use."""
        if self._ready and self._pool is not None:
            return self._pool
        async with self._lock:
            if self._pool is None:
                import asyncpg

                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=self._pool_sizes[0],
                    max_size=self._pool_sizes[1],
                    server_settings=self._server_settings,
                )
            if not self._ready:
                await self._migrate(self._pool)
                self._ready = True
        return self._pool

    async def migrate(self) -> int:
        """Create or upgrade the schema; returns the schema version now in place."""
        await self.pool()
        return SCHEMA_VERSION

    async def _migrate(self, pool: asyncpg.Pool[Any]) -> None:
        from ...outbox.schema import outbox_ddl

        s = self._s
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"sagamesh:{s}")
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {s}.schema_version (version integer NOT NULL)"
            )
            current = await conn.fetchval(f"SELECT max(version) FROM {s}.schema_version") or 0
            for version, statements in sorted(_migrations(s).items()):
                if version <= current:
                    continue
                for sql in statements:
                    await conn.execute(sql)
                await conn.execute(f"INSERT INTO {s}.schema_version VALUES ($1)", version)
            for sql in outbox_ddl(self.schema):
                await conn.execute(sql)

    # -- writes -----------------------------------------------------------------------------

    def _saga_args(self, saga: SagaInstance) -> list[Any]:
        return [
            saga.id,
            saga.definition_id,
            saga.state.value,
            saga.current_step,
            saga.completed_steps,
            saga.total_steps,
            _json(saga.data),
            _json(saga.result),
            _json(saga.error),
            _aware(saga.start_time),
            _aware(saga.end_time),
            _aware(saga.created_at),
            _aware(saga.updated_at),
            saga.version,
            encode_text(saga.metadata),
            saga.trace_id,
            _aware(saga.timeout_at),
            saga.lease_owner,
            _aware(saga.lease_expires_at),
        ]

    async def _write(self, conn: Any, saga: SagaInstance) -> int:
        s = self._s
        args = self._saga_args(saga)
        if saga.version == 0:
            version = await conn.fetchval(
                f"INSERT INTO {s}.sagas ({_SAGA_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, "
                "$7::jsonb, $8::jsonb, $9::jsonb, $10, $11, $12, $13, 1, $14::jsonb, $15, $16, "
                "$17, $18) ON CONFLICT (id) DO NOTHING RETURNING version",
                *args[:13], *args[14:],
            )
            if version is None:
                raise ConcurrencyConflictError(f"saga {saga.id} already exists")
            return int(version)
        version = await conn.fetchval(
            f"UPDATE {s}.sagas SET definition_id = $2, state = $3, current_step = $4, "
            "completed_steps = $5, total_steps = $6, data = $7::jsonb, result = $8::jsonb, "
            "error = $9::jsonb, start_time = $10, end_time = $11, created_at = $12, "
            "updated_at = $13, version = version + 1, metadata = $15::jsonb, trace_id = $16, "
            "timeout_at = $17, lease_owner = $18, lease_expires_at = $19 "
            "WHERE id = $1 AND version = $14 RETURNING version",
            *args,
        )
        if version is None:
            await self._raise_stale(conn, saga.id, saga.version)
        return int(version)

    async def _raise_stale(self, conn: Any, saga_id: str, expected: int) -> None:
        stored = await conn.fetchval(f"SELECT version FROM {self._s}.sagas WHERE id = $1", saga_id)
        if stored is None:
            raise SagaNotFoundError(saga_id)
        raise ConcurrencyConflictError(
            f"saga {saga_id}: stored version {stored}, write based on version {expected}"
        )

    async def save_saga(
        self,
        saga: SagaInstance,
        *,
        outbox_messages: Sequence[Message] = (),
        connection: asyncpg.Connection[Any] | None = None,
    ) -> None:
        """Insert (version 0) or version-checked update.

        ``outbox_messages`` go into the outbox table in the same transaction as the state;
        ``connection`` lets the caller include the write in a transaction of their own.
        """
        from ...outbox.schema import insert_messages

        if connection is not None:
            async with connection.transaction():
                saga.version = await self._write(connection, saga)
                await insert_messages(connection, self.schema, saga.id, outbox_messages)
            return
        pool = await self.pool()
        async with pool.acquire() as conn:
            if not outbox_messages:
                saga.version = await self._write(conn, saga)
                return
            async with conn.transaction():
                version = await self._write(conn, saga)
                await insert_messages(conn, self.schema, saga.id, outbox_messages)
            saga.version = version

    async def update_saga_state(
        self,
        saga_id: str,
        state: SagaState,
        *,
        expected_version: int,
        error: SagaError | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> int:
        pool = await self.pool()
        terminal = state in TERMINAL_STATES
        async with pool.acquire() as conn:
            version = await conn.fetchval(
                f"UPDATE {self._s}.sagas SET state = $2, error = coalesce($3::jsonb, error), "
                "metadata = metadata || coalesce($4::jsonb, '{}'::jsonb), "
                "updated_at = clock_timestamp(), "
                "end_time = CASE WHEN $5 AND end_time IS NULL THEN clock_timestamp() "
                "ELSE end_time END, version = version + 1 "
                "WHERE id = $1 AND version = $6 RETURNING version",
                saga_id, state.value, _json(error), _json(metadata or None), terminal,
                expected_version,
            )
            if version is None:
                await self._raise_stale(conn, saga_id, expected_version)
        return int(version)

    async def delete_saga(self, saga_id: str) -> None:
        pool = await self.pool()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(f"DELETE FROM {self._s}.saga_steps WHERE saga_id = $1", saga_id)
            await conn.execute(f"DELETE FROM {self._s}.sagas WHERE id = $1", saga_id)

    async def save_step_state(self, step: StepState) -> None:
        pool = await self.pool()
        await pool.execute(
            f"INSERT INTO {self._s}.saga_steps (saga_id, step_id, step_index, status, attempt, "
            "input, output, error, started_at, completed_at, compensation_attempt, "
            "compensation_error) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8::jsonb, "
            "$9, $10, $11, $12::jsonb) ON CONFLICT (saga_id, step_id) DO UPDATE SET "
            "step_index = EXCLUDED.step_index, status = EXCLUDED.status, "
            "attempt = EXCLUDED.attempt, input = EXCLUDED.input, output = EXCLUDED.output, "
            "error = EXCLUDED.error, started_at = EXCLUDED.started_at, "
            "completed_at = EXCLUDED.completed_at, "
            "compensation_attempt = EXCLUDED.compensation_attempt, "
            "compensation_error = EXCLUDED.compensation_error",
            step.saga_id, step.step_id, step.step_index, step.status.value, step.attempt,
            _json(step.input), _json(step.output), _json(step.error), _aware(step.started_at),
            _aware(step.completed_at), step.compensation_attempt, _json(step.compensation_error),
        )

    # -- reads ------------------------------------------------------------------------------

    async def get_saga(self, saga_id: str) -> SagaInstance | None:
        pool = await self.pool()
        row = await pool.fetchrow(
            f"SELECT {_SAGA_COLUMNS} FROM {self._s}.sagas WHERE id = $1", saga_id
        )
        return None if row is None else _saga_from_row(row)

    async def get_active_sagas(self, filter: SagaFilter | None = None) -> list[SagaInstance]:
        pool = await self.pool()
        where = [f"state NOT IN ({_TERMINAL_SQL})"]
        args: list[Any] = []
        limit = ""
        if filter is not None:
            if filter.states is not None:
                args.append([s.value for s in filter.states])
                where.append(f"state = ANY(${len(args)}::text[])")
            if filter.definition_id is not None:
                args.append(filter.definition_id)
                where.append(f"definition_id = ${len(args)}")
            if filter.created_after is not None:
                args.append(_aware(filter.created_after))
                where.append(f"created_at >= ${len(args)}")
            if filter.created_before is not None:
                args.append(_aware(filter.created_before))
                where.append(f"created_at <= ${len(args)}")
            if filter.metadata:
                args.append(encode_text(dict(filter.metadata)))
                where.append(f"metadata @> ${len(args)}::jsonb")
            elif filter.limit is not None:
                limit = f" LIMIT {int(filter.limit)}"
        rows = await pool.fetch(
            f"SELECT {_SAGA_COLUMNS} FROM {self._s}.sagas WHERE {' AND '.join(where)} "
            f"ORDER BY created_at, id{limit}",
            *args,
        )
        sagas = [_saga_from_row(r) for r in rows]
        if filter is not None and filter.metadata:  # containment is looser than equality
            sagas = [s for s in sagas if filter.matches(s)]
            if filter.limit is not None:
                sagas = sagas[: filter.limit]
        return sagas

    async def get_timeout_sagas(self, before: datetime) -> list[SagaInstance]:
        pool = await self.pool()
        rows = await pool.fetch(
            f"SELECT {_SAGA_COLUMNS} FROM {self._s}.sagas WHERE timeout_at IS NOT NULL "
            f"AND timeout_at <= $1 AND state NOT IN ({_TERMINAL_SQL}) ORDER BY timeout_at",
            _aware(before),
        )
        return [_saga_from_row(r) for r in rows]

    async def get_step_states(self, saga_id: str) -> list[StepState]:
        pool = await self.pool()
        rows = await pool.fetch(
            f"SELECT * FROM {self._s}.saga_steps WHERE saga_id = $1 ORDER BY step_index",
            saga_id,
        )
        return [_step_from_row(r) for r in rows]

    async def cleanup_expired_sagas(self, older_than: datetime) -> int:
        pool = await self.pool()
        async with pool.acquire() as conn, conn.transaction():
            ids = await conn.fetch(
                f"DELETE FROM {self._s}.sagas WHERE state IN ({_TERMINAL_SQL}) "
                "AND coalesce(end_time, updated_at) < $1 RETURNING id",
                _aware(older_than),
            )
            if ids:
                await conn.execute(
                    f"DELETE FROM {self._s}.saga_steps WHERE saga_id = ANY($1::text[])",
                    [r["id"] for r in ids],
                )
        return len(ids)

    # -- leases -----------------------------------------------------------------------------

    async def acquire_lease(self, saga_id: str, owner: str, ttl: float) -> SagaInstance | None:
        pool = await self.pool()
        row = await pool.fetchrow(
            f"UPDATE {self._s}.sagas SET lease_owner = $2, "
            "lease_expires_at = clock_timestamp() + make_interval(secs => $3), "
            "version = version + 1 WHERE id = $1 AND (lease_owner IS NULL OR lease_owner = $2 "
            "OR lease_expires_at IS NULL OR lease_expires_at <= clock_timestamp()) "
            f"RETURNING {_SAGA_COLUMNS}",
            saga_id, owner, float(ttl),
        )
        return None if row is None else _saga_from_row(row)

    async def release_lease(self, saga_id: str, owner: str) -> None:
        pool = await self.pool()
        await pool.execute(
            f"UPDATE {self._s}.sagas SET lease_owner = NULL, lease_expires_at = NULL, "
            "version = version + 1 WHERE id = $1 AND lease_owner = $2",
            saga_id, owner,
        )

    async def drop_schema(self) -> None:
        """Drop the whole schema (tests and teardown of throwaway deployments)."""
        pool = await self.pool()
        await pool.execute(f"DROP SCHEMA IF EXISTS {self._s} CASCADE")
        self._ready = False

    async def close(self) -> None:
        if self._owns_pool and self._pool is not None:
            await self._pool.close()
            self._pool = None
            self._ready = False
