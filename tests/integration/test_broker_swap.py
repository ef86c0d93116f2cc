"""The order example runs unchanged on every config file: only the settings file (plus
environment overrides for test isolation) changes, and on every broker the sagas finish and a
consumer receives every saga event back through that broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "order_saga.py"
COUNT = 6


def _run(config: str, unique: str, extra_env: dict[str, str] | None = None) -> dict[str, dict]:
    env = {
        **os.environ,
        "SAGAMESH_PUBLISHER__TOPIC_PREFIX": f"swap.{unique}.events",
        "SAGAMESH_CONSUMER__TOPIC_PREFIX": f"swap.{unique}.events",
        "SAGAMESH_CONSUMER__GROUP": f"swap-{unique}",
        "SAGAMESH_CONSUMER__DLQ_TOPIC": f"swap.{unique}.dlq",
        "SAGAMESH_PUBLISHER__RELIABILITY__DLQ_TOPIC": f"swap.{unique}.dlq",
        **(extra_env or {}),
    }
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--config", str(ROOT / "configs" / config),
         "--count", str(COUNT), "--failure-rate", "0.3", "--seed", "7"],
        capture_output=True, text=True, timeout=150, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [line] = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    result: dict[str, dict] = json.loads(line.removeprefix("RESULT "))
    return result


def _check(result: dict, broker: str) -> None:
    assert result["broker"] == broker
    outcomes, received = result["outcomes"], result["received"]
    # Every saga ended completed or compensated (seed 7 declines some payments).
    assert sum(outcomes.values()) == COUNT
    assert set(outcomes) <= {"completed", "compensated"}
    assert outcomes.get("compensated", 0) >= 1
    # Every saga's events came back through the broker: one start and one end per saga.
    assert received["saga.started"] == COUNT
    assert received.get("saga.completed", 0) == outcomes.get("completed", 0)
    assert received.get("saga.failed", 0) == outcomes.get("compensated", 0)
    assert received["saga.step.completed"] >= 3 * outcomes.get("completed", 0)
    assert received.get("compensation.completed", 0) == outcomes.get("compensated", 0)


def test_memory(unique: str) -> None:
    _check(_run("memory.yaml", unique), "memory")


def test_nats(nats_url: str, unique: str) -> None:
    _check(_run("nats.yaml", unique, {"SAGAMESH_BROKER__URL": nats_url}), "nats")


def test_rabbitmq(amqp_url: str, unique: str) -> None:
    _check(_run("rabbitmq.yaml", unique, {"SAGAMESH_BROKER__URL": amqp_url}), "rabbitmq")


def test_kafka(kafka_bootstrap: str, unique: str) -> None:
    _check(_run("kafka.yaml", unique, {"SAGAMESH_BROKER__URL": f"kafka://{kafka_bootstrap}"}),
           "kafka")


def test_nats_with_postgres_storage(nats_url: str, postgres_dsn: str, unique: str) -> None:
    """The durable-storage config: sagas persisted in PostgreSQL (a private schema)."""
    result = _run("nats-postgres.yaml", unique, {
        "SAGAMESH_BROKER__URL": nats_url, "SAGAMESH_STORAGE__URL": postgres_dsn,
        "SAGAMESH_STORAGE__SCHEMA": f"swap_{unique}"})
    _check(result, "nats")
    import asyncio

    import asyncpg

    async def cleanup() -> int:
        conn = await asyncpg.connect(postgres_dsn)
        try:
            rows = await conn.fetchval(
                f'SELECT count(*) FROM "swap_{unique}".sagas')
            await conn.execute(f'DROP SCHEMA IF EXISTS "swap_{unique}" CASCADE')
            return int(rows)
        finally:
            await conn.close()

    assert asyncio.run(cleanup()) == COUNT
