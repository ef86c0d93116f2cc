"""Durable storages under test, each in a throwaway namespace (redis prefix / postgres schema)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sagamesh.saga.storage.postgres import PostgresStateStorage
from sagamesh.saga.storage.redis import RedisStateStorage


async def drop_redis_prefix(storage: RedisStateStorage) -> None:
    await storage.drop_prefix()


@pytest.fixture(params=["redis", "postgres"])
def storage_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    request.getfixturevalue("redis_url" if kind == "redis" else "postgres_dsn")  # skip if down
    return kind


@pytest.fixture
async def durable_storage(
    storage_kind: str, unique: str
) -> AsyncIterator[RedisStateStorage | PostgresStateStorage]:
    from sagamesh.testing.services import service_url

    if storage_kind == "redis":
        redis = RedisStateStorage(service_url("redis"), prefix=f"test-storage-{unique}")
        try:
            yield redis
        finally:
            await drop_redis_prefix(redis)
            await redis.close()
    else:
        pg = PostgresStateStorage(service_url("postgres"), schema=f"test_storage_{unique}")
        try:
            yield pg
        finally:
            await pg.drop_schema()
            await pg.close()
