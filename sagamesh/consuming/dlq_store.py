"""Where the DLQ handler keeps dead-lettered messages until they are recovered, purged or
expire. The store assigns a fresh ``version`` on every put, so a recovery deletes only the
entry it republished, never one that came back to the DLQ in the meantime."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from ..message import Headers, Message


def _int(headers: Mapping[str, str], name: str) -> int:
    try:
        return int(headers.get(name, "0"))
    except ValueError:
        return 0


@dataclass(slots=True)
class DeadLetterEntry:
    """One dead-lettered message; ``received_at`` is when it (last) entered the DLQ."""

    message: Message
    received_at: float  # epoch seconds
    version: int = 0

    @property
    def id(self) -> str:
        return self.message.id

    @property
    def reason(self) -> str:
        return self.message.headers.get(Headers.DLQ_REASON, "")

    @property
    def original_topic(self) -> str:
        return self.message.headers.get(Headers.ORIGINAL_TOPIC, self.message.topic)

    @property
    def attempts(self) -> int:
        return _int(self.message.headers, Headers.ATTEMPTS)

    @property
    def recoveries(self) -> int:
        return _int(self.message.headers, Headers.DLQ_RECOVERIES)

    @property
    def handler_id(self) -> str | None:
        return self.message.headers.get(Headers.DLQ_HANDLER)

    @property
    def first_failure(self) -> str:
        return self.message.headers.get(Headers.FIRST_FAILURE, "")

    @property
    def received(self) -> datetime:
        return datetime.fromtimestamp(self.received_at, UTC)


@runtime_checkable
class DLQStore(Protocol):
    async def put(self, entry: DeadLetterEntry) -> DeadLetterEntry:
        """Insert or replace by id; returns the entry with its new version."""

    async def get(self, message_id: str) -> DeadLetterEntry | None: ...

    async def list(self) -> list[DeadLetterEntry]:
        """Every entry, oldest first."""

    async def delete(self, message_id: str, *, version: int | None = None) -> bool:
        """Delete (only if still at ``version`` when given); True when something was deleted."""

    async def close(self) -> None: ...


class MemoryDLQStore:
    def __init__(self) -> None:
        self._entries: dict[str, DeadLetterEntry] = {}
        self._versions = itertools.count(1)

    def __len__(self) -> int:
        return len(self._entries)

    async def put(self, entry: DeadLetterEntry) -> DeadLetterEntry:
        entry.version = next(self._versions)
        self._entries.pop(entry.id, None)  # keep dict order = arrival order
        self._entries[entry.id] = entry
        return entry

    async def get(self, message_id: str) -> DeadLetterEntry | None:
        return self._entries.get(message_id)

    async def list(self) -> list[DeadLetterEntry]:
        return sorted(self._entries.values(), key=lambda e: e.received_at)

    async def delete(self, message_id: str, *, version: int | None = None) -> bool:
        entry = self._entries.get(message_id)
        if entry is None or (version is not None and entry.version != version):
            return False
        del self._entries[message_id]
        return True

    async def close(self) -> None:
        return None
