"""Transactional outbox on PostgreSQL and Redis: events stored with the state that produced
them, relayed to a broker at least once, in order per key (saga)."""

from __future__ import annotations

from typing import Any

__all__ = ["PostgresOutbox", "RedisOutbox", "outbox_relay", "saga_event_encoder"]


def __getattr__(name: str) -> Any:
    # Loaded on first use: importing sagamesh.outbox must not import asyncpg or redis.
    if name == "PostgresOutbox":
        from .postgres import PostgresOutbox

        return PostgresOutbox
    if name == "RedisOutbox":
        from .redis import RedisOutbox

        return RedisOutbox
    if name == "outbox_relay":
        from .relay import outbox_relay

        return outbox_relay
    if name == "saga_event_encoder":
        from .events import saga_event_encoder

        return saga_event_encoder
    raise AttributeError(name)
