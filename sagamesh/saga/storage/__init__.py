"""Saga state storages: the protocol, the in-memory store, and (lazily) Redis and PostgreSQL."""

from __future__ import annotations

from typing import Any

from .base import SagaFilter, StateStorage
from .memory import MemoryStateStorage

__all__ = [
    "MemoryStateStorage",
    "PostgresStateStorage",
    "RedisStateStorage",
    "SagaFilter",
    "StateStorage",
]


def __getattr__(name: str) -> Any:
    # Durable stores load on first use so importing the package never needs their modules.
    if name == "RedisStateStorage":
        from .redis import RedisStateStorage

        return RedisStateStorage
    if name == "PostgresStateStorage":
        from .postgres import PostgresStateStorage

        return PostgresStateStorage
    raise AttributeError(name)
