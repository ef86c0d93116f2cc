"""Fixtures shared by the whole suite: real service endpoints (fail in CI, skip locally)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from sagamesh.testing.services import (
    require_service,
    service_unavailable,
    service_url,
    start_tansu,
)


@pytest.fixture(scope="session")
def nats_url() -> str:
    return require_service("NATS", service_url("nats"))


@pytest.fixture(scope="session")
def amqp_url() -> str:
    return require_service("RabbitMQ", service_url("rabbitmq"))


@pytest.fixture(scope="session")
def redis_url() -> str:
    return require_service("Redis", service_url("redis"))


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    return require_service("PostgreSQL", service_url("postgres"))


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A private tansu broker for the session, unless SAGAMESH_TEST_KAFKA_BOOTSTRAP points
    at an existing Kafka (e.g. the docker-compose one)."""
    import os

    external = os.environ.get("SAGAMESH_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield require_service("Kafka", f"kafka://{external}").removeprefix("kafka://")
        return
    try:
        proc = start_tansu()
    except Exception as exc:  # binary missing or did not start
        service_unavailable(f"cannot start tansu (Kafka): {exc}")
    try:
        yield proc.bootstrap
    finally:
        proc.stop()


@pytest.fixture
def unique() -> str:
    """A short unique suffix so tests sharing a real broker never see each other's data."""
    return uuid.uuid4().hex[:10]
