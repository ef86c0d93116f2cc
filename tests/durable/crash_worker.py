"""A saga worker process for the crash test: runs N order sagas and is SIGKILLed at random.

    python tests/durable/crash_worker.py --storage postgres|redis --ns NAME --count 200 --dsn DSN
        [--redis-url URL] [--instance ID] [--seed N]

Every run (first or after a kill) is the same program: it recovers what storage holds, then
(idempotently, by explicit saga id) starts every saga of the batch, drives them, relays their
events from the outbox, and exits 0 once every saga is terminal and the outbox is empty.

The order services dedupe on ``ctx.idempotency_key`` and record in PostgreSQL schema ``NS``
(read by the test after the run):

* ``calls``     every service call with its [started_at, ended_at] interval and process id
* ``effects``   one row per idempotency key whose step took effect
* ``undos``     one row per idempotency key whose compensation took effect
* ``published`` every message the outbox relay handed to the broker (duplicates included)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
from collections.abc import Sequence
from typing import Any

import asyncpg

from sagamesh.brokers.memory import MemoryBroker
from sagamesh.errors import BusinessError, RetryableError
from sagamesh.message import Message
from sagamesh.outbox import PostgresOutbox, RedisOutbox, outbox_relay, saga_event_encoder
from sagamesh.retry import FixedDelayRetryPolicy
from sagamesh.saga import (
    ConcurrencyConfig,
    SagaCoordinator,
    SagaDefinition,
    StepContext,
    step,
)
from sagamesh.saga.state import TERMINAL_STATES
from sagamesh.saga.storage.postgres import PostgresStateStorage
from sagamesh.saga.storage.redis import RedisStateStorage

STEPS = ("create-order", "reserve-inventory", "process-payment", "confirm-order")
LEASE_TTL = 1.0

SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.calls (id bigserial PRIMARY KEY, key text NOT NULL,
    phase text NOT NULL, attempt int NOT NULL, pid int NOT NULL,
    started_at timestamptz NOT NULL, ended_at timestamptz);
CREATE TABLE IF NOT EXISTS {s}.effects (key text NOT NULL, saga_id text NOT NULL,
    step text NOT NULL, pid int NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.undos (key text NOT NULL, saga_id text NOT NULL,
    step text NOT NULL, pid int NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.published (event_id text NOT NULL, saga_id text NOT NULL,
    type text NOT NULL, step_id text NOT NULL, pid int NOT NULL);
"""


def saga_ids(count: int) -> list[str]:
    return [f"order-{i:04d}" for i in range(count)]


def payment_declined(saga_id: str) -> bool:
    """Every fifth order's payment is declined (a business error: compensate)."""
    return int(saga_id.rsplit("-", 1)[1]) % 5 == 0


class OrderServices:
    """The four order services; each call is logged, effects are deduplicated by key."""

    def __init__(self, pool: asyncpg.Pool, schema: str, seed: int) -> None:
        self.pool = pool
        self.s = schema
        self.rng = random.Random(seed)
        self.pid = os.getpid()

    async def _call(self, ctx: StepContext, phase: str, table: str, fail: bool) -> None:
        call_id = await self.pool.fetchval(
            f"INSERT INTO {self.s}.calls (key, phase, attempt, pid, started_at) "
            "VALUES ($1, $2, $3, $4, clock_timestamp()) RETURNING id",
            ctx.idempotency_key, phase, ctx.attempt, self.pid,
        )
        try:
            await asyncio.sleep(self.rng.uniform(0.005, 0.03))
            if fail:
                raise BusinessError("payment_declined", f"card declined for {ctx.saga_id}")
            if phase == "do" and ctx.attempt == 1 and self.rng.random() < 0.1:
                raise RetryableError("service briefly unavailable")
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext($1))", ctx.idempotency_key
                )
                done = await conn.fetchval(
                    f"SELECT 1 FROM {self.s}.{table} WHERE key = $1", ctx.idempotency_key
                )
                if not done:
                    await conn.execute(
                        f"INSERT INTO {self.s}.{table} (key, saga_id, step, pid) "
                        "VALUES ($1, $2, $3, $4)",
                        ctx.idempotency_key, ctx.saga_id, ctx.step_id, self.pid,
                    )
        finally:  # also when cancelled (a lost lease): the interval must close
            await self._end(call_id)

    async def _end(self, call_id: int) -> None:
        await self.pool.execute(
            f"UPDATE {self.s}.calls SET ended_at = clock_timestamp() WHERE id = $1", call_id
        )

    def execute(self, name: str) -> Any:
        async def run(ctx: StepContext, data: dict[str, Any]) -> dict[str, Any]:
            fail = name == "process-payment" and payment_declined(ctx.saga_id)
            await self._call(ctx, "do", "effects", fail)
            return {**data, "done": [*data.get("done", []), name]}

        return run

    def compensate(self, name: str) -> Any:
        async def run(ctx: StepContext, data: dict[str, Any]) -> None:
            await self._call(ctx, "undo", "undos", False)

        return run


def definition(services: OrderServices) -> SagaDefinition:
    return SagaDefinition(
        id="order-processing",
        name="Order",
        steps=[step(n, services.execute(n), services.compensate(n), timeout=10) for n in STEPS],
        retry_policy=FixedDelayRetryPolicy(max_attempts=3, delay=0.01),
    )


class RecordingBroker:
    """A broker (NATS JetStream, or the memory broker) with every publish also recorded
    durably (duplicates included): what the relay handed over, next to what the broker kept."""

    def __init__(self, inner: Any, pool: asyncpg.Pool, schema: str) -> None:
        self.inner = inner
        self.name = inner.name
        self.capabilities = self.inner.capabilities
        self.pool = pool
        self.s = schema
        self.pid = os.getpid()

    async def connect(self) -> None:
        await self.inner.connect()

    async def close(self) -> None:
        await self.inner.close()

    async def publish(self, message: Message) -> None:
        (result,) = await self.publish_many([message])
        if result is not None:
            raise result

    async def publish_many(self, messages: Sequence[Message]) -> list[Exception | None]:
        await self.pool.executemany(
            f"INSERT INTO {self.s}.published (event_id, saga_id, type, step_id, pid) "
            "VALUES ($1, $2, $3, $4, $5)",
            [
                (m.id, m.key or "", m.headers.get("sagamesh-event-type", ""),
                 _step_of(m), self.pid)
                for m in messages
            ],
        )
        return await self.inner.publish_many(messages)


def _step_of(message: Message) -> str:
    import msgspec

    return str(msgspec.json.decode(message.body).get("step_id", ""))


async def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--storage", choices=["postgres", "redis"], required=True)
    parser.add_argument("--ns", required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--instance", default=f"worker-{os.getpid()}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nats-url", default="", help="relay to NATS (else: memory broker)")
    parser.add_argument("--topic", default="saga.events")
    args = parser.parse_args(argv)

    ns = args.ns
    pool = await asyncpg.create_pool(args.dsn, min_size=2, max_size=12)
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock(hashtext($1))", ns)
        await conn.execute(SCHEMA_SQL.format(s=ns))
        await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", ns)
    storage: Any
    outbox: Any
    if args.storage == "postgres":
        storage = PostgresStateStorage(args.dsn, schema=ns)
        outbox = PostgresOutbox(args.dsn, schema=ns)
    else:
        storage = RedisStateStorage(args.redis_url, prefix=ns)
        outbox = RedisOutbox(args.redis_url, prefix=ns, leader_ttl=LEASE_TTL)
    inner: Any = MemoryBroker()
    if args.nats_url:
        from sagamesh_nats import NatsBroker

        inner = NatsBroker(args.nats_url)
    broker = RecordingBroker(inner, pool, ns)
    await broker.connect()
    relay = outbox_relay(outbox, broker, poll_interval=0.2)
    services = OrderServices(pool, ns, args.seed)
    coordinator = SagaCoordinator(
        storage,
        concurrency=ConcurrencyConfig(max_concurrent_sagas=64, worker_pool_size=32,
                                      acquire_timeout=60),
        instance_id=args.instance,
        lease_ttl=LEASE_TTL,
        recovery_interval=0.3,
        outbox=saga_event_encoder(args.topic),
    )
    coordinator.register(definition(services))
    await coordinator.start()  # recovers what earlier (killed) runs left
    print("ready", flush=True)
    for saga_id in saga_ids(args.count):
        await coordinator.start_saga("order-processing", {"order_id": saga_id},
                                     saga_id=saga_id)
    while True:  # until every saga is terminal (some may be driven by another worker)
        pending = 0
        for saga_id in saga_ids(args.count):
            saga = await storage.get_saga(saga_id)
            if saga is None or saga.state not in TERMINAL_STATES:
                pending += 1
        if not pending and await outbox.unsent_count() == 0:
            break
        relay.notify()
        await asyncio.sleep(0.2)
    await coordinator.close()
    await relay.close(drain_within=10)
    await broker.close()
    await outbox.close()
    await storage.close()
    await pool.close()
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
