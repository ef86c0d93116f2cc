"""The shared storage conformance suite on Redis and PostgreSQL (fresh prefix/schema per test)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sagamesh.saga.storage import StateStorage
from sagamesh.saga.storage.postgres import PostgresStateStorage
from sagamesh.saga.storage.redis import RedisStateStorage
from sagamesh.testing.storage_conformance import StorageConformance

from .conftest import drop_redis_prefix


@pytest.mark.redis
class TestRedisStorage(StorageConformance):
    @pytest.fixture
    async def storage(self, redis_url: str, unique: str) -> AsyncIterator[StateStorage]:
        store = RedisStateStorage(redis_url, prefix=f"test-conf-{unique}")
        try:
            yield store
        finally:
            await drop_redis_prefix(store)
            await store.close()


@pytest.mark.postgres
class TestPostgresStorage(StorageConformance):
    @pytest.fixture
    async def storage(self, postgres_dsn: str, unique: str) -> AsyncIterator[StateStorage]:
        store = PostgresStateStorage(postgres_dsn, schema=f"test_conf_{unique}")
        try:
            yield store
        finally:
            await store.drop_schema()
            await store.close()
