"""Fixtures shared by the whole suite: real service endpoints (fail in CI, skip locally)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from sagamesh.testing.services import (
    host_port,
    in_ci,
    port_open,
    service_url,
    start_tansu,
)


def _require(name: str, url: str) -> str:
    host, port = host_port(url)
    if not port_open(host, port, timeout=2.0):
        message = f"{name} is not reachable at {host}:{port} (run scripts/services.sh)"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return url


@pytest.fixture(scope="session")
def nats_url() -> str:
    return _require("NATS", service_url("nats"))


@pytest.fixture(scope="session")
def amqp_url() -> str:
    return _require("RabbitMQ", service_url("rabbitmq"))


@pytest.fixture(scope="session")
def redis_url() -> str:
    return _require("Redis", service_url("redis"))


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    return _require("PostgreSQL", service_url("postgres"))


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A private tansu broker for the session, unless SAGAMESH_TEST_KAFKA_BOOTSTRAP points
    at an existing Kafka (e.g. the docker-compose one)."""
    import os

    external = os.environ.get("SAGAMESH_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield _require("Kafka", f"kafka://{external}").removeprefix("kafka://")
        return
    try:
        proc = start_tansu()
    except Exception as exc:  # binary missing or did not start
        if in_ci():
            pytest.fail(f"cannot start tansu (Kafka): {exc}", pytrace=False)
        pytest.skip(f"cannot start tansu (Kafka): {exc}")
    try:
        yield proc.bootstrap
    finally:
        proc.stop()


@pytest.fixture
def unique() -> str:
    """A short unique suffix so tests sharing a real broker never see each other's data."""
    return uuid.uuid4().hex[:10]
