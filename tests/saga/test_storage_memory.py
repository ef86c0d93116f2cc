"""The storage conformance suite on :class:`MemoryStateStorage`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sagamesh.saga.storage import MemoryStateStorage, StateStorage
from sagamesh.testing.storage_conformance import StorageConformance


class TestMemoryStorage(StorageConformance):
    @pytest.fixture
    async def storage(self) -> AsyncIterator[StateStorage]:
        store = MemoryStateStorage()
        yield store
        await store.close()


def test_memory_storage_satisfies_the_protocol() -> None:
    assert isinstance(MemoryStateStorage(), StateStorage)
