"""The PostgreSQL outbox table, shared by the saga storage (state + events in one transaction)
and :class:`~sagamesh.outbox.postgres.PostgresOutbox` (the publisher's and users' writes)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..message import Message
from ..saga.storage.records import encode_text

if TYPE_CHECKING:
    import asyncpg

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def quote_ident(name: str, *, field: str) -> str:
    """A validated, double-quoted SQL identifier (schema/table names come from configuration)."""
    if not _IDENT.match(name):
        raise ConfigError(f"invalid SQL identifier {name!r}", field=field)
    return f'"{name}"'


def notify_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel the relay of ``schema`` wakes on."""
    return f"sagamesh_outbox_{schema}"[:63]


def outbox_ddl(schema: str) -> list[str]:
    s = quote_ident(schema, field="schema")
    return [
        f"CREATE SCHEMA IF NOT EXISTS {s}",
        f"""CREATE TABLE IF NOT EXISTS {s}.outbox (
            id bigserial PRIMARY KEY,
            tx_id text NOT NULL DEFAULT '',
            message_id text NOT NULL,
            topic text NOT NULL,
            key text,
            body bytea NOT NULL,
            headers jsonb NOT NULL DEFAULT '{{}}'::jsonb,
            created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            sent_at timestamptz,
            attempts integer NOT NULL DEFAULT 0,
            last_error text
        )""",
        f"CREATE INDEX IF NOT EXISTS outbox_unsent_idx ON {s}.outbox (id) WHERE sent_at IS NULL",
        f"CREATE INDEX IF NOT EXISTS outbox_sent_idx ON {s}.outbox (sent_at) "
        "WHERE sent_at IS NOT NULL",
    ]


async def insert_messages(
    conn: asyncpg.Connection[Any] | Any, schema: str, tx_id: str, messages: Sequence[Message]
) -> None:
    """Append ``messages`` on ``conn`` (inside the caller's transaction) and notify the relay,
    which Postgres delivers only if and when that transaction commits."""
    if not messages:
        return
    s = quote_ident(schema, field="schema")
    await conn.executemany(
        f"INSERT INTO {s}.outbox (tx_id, message_id, topic, key, body, headers) "
        "VALUES ($1, $2, $3, $4, $5, $6::jsonb)",
        [(tx_id, m.id, m.topic, m.key, m.body, encode_text(m.headers)) for m in messages],
    )
    await conn.execute("SELECT pg_notify($1, '')", notify_channel(schema))
