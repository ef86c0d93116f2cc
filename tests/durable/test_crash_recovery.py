"""The crash test: a worker process running 200 order sagas is SIGKILLed at random points several
times; restarted workers (finally two at once) must finish every saga correctly.

Broker: each worker relays events from the outbox to NATS JetStream (``sagamesh_nats``; a stream
per run); the test reads the stream back afterwards, so "no event is missing" is checked against
what the broker holds. The relay also records every hand-over in PostgreSQL (``published``,
duplicates included). Effects, compensations and every service call's time interval are
recorded by the order services (see ``crash_worker.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import signal
import sys
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from sagamesh.saga.state import SagaState
from sagamesh.saga.storage.postgres import PostgresStateStorage
from sagamesh.saga.storage.redis import RedisStateStorage

pytestmark = [
    pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis, pytest.mark.nats,
    pytest.mark.timeout(180),
]

WORKER = Path(__file__).with_name("crash_worker.py")
ROOT = Path(__file__).resolve().parents[2]
COUNT = 200
KILLS = 4
STEPS = ("create-order", "reserve-inventory", "process-payment", "confirm-order")


def _declined(saga_id: str) -> bool:
    return int(saga_id.rsplit("-", 1)[1]) % 5 == 0


class Workers:
    def __init__(self, kind: str, ns: str, dsn: str, redis_url: str, nats_url: str) -> None:
        self.kind, self.ns, self.dsn, self.redis_url = kind, ns, dsn, redis_url
        self.nats_url = nats_url
        self.topic = f"crash.{ns}"
        self.killed: dict[int, datetime] = {}  # pid -> a time at which it was certainly dead
        self.finals: list[int] = []

    async def spawn(self, instance: str, seed: int) -> asyncio.subprocess.Process:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        return await asyncio.create_subprocess_exec(
            sys.executable, str(WORKER), "--storage", self.kind, "--ns", self.ns,
            "--dsn", self.dsn, "--redis-url", self.redis_url, "--count", str(COUNT),
            "--instance", instance, "--seed", str(seed), "--nats-url", self.nats_url,
            "--topic", self.topic,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env,
        )

    @staticmethod
    async def ready(proc: asyncio.subprocess.Process) -> bool:
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            line = await proc.stdout.readline()
        return line.strip() == b"ready"

    async def kill(self, proc: asyncio.subprocess.Process) -> bool:
        if proc.returncode is not None:
            return False
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        self.killed[proc.pid] = datetime.now(UTC)
        return True


async def _progress(conn: asyncpg.Connection, ns: str, pid: int, calls: int) -> None:
    """Return once process ``pid`` has made ``calls`` service calls."""
    query = f"SELECT count(*) FROM {ns}.calls WHERE pid = $1"
    while await conn.fetchval(query, pid) < calls:  # noqa: ASYNC110 - another process's rows
        await asyncio.sleep(0.01)


async def _run_with_kills(workers: Workers, rng: random.Random) -> int:
    """Kill each victim at a random point of its progress, not of the clock: on a fast machine
    a timed kill can come after the victim already finished everything. Four victims make at
    most 4 x 120 of the ~900 calls the run needs, so every one of them dies mid-run."""
    kills = 0
    conn = await asyncpg.connect(workers.dsn)
    try:
        for round_ in range(KILLS):
            proc = await workers.spawn(f"victim-{round_}", rng.randrange(1 << 30))
            assert await workers.ready(proc)
            with contextlib.suppress(TimeoutError):  # a stuck victim is killed all the same
                async with asyncio.timeout(30):
                    await _progress(conn, workers.ns, proc.pid, rng.randrange(10, 120))
            await asyncio.sleep(rng.uniform(0, 0.03))  # anywhere inside a call or a write
            kills += await workers.kill(proc)
    finally:
        await conn.close()
    # Two workers recover at once and finish everything.
    finals = [await workers.spawn(f"final-{i}", rng.randrange(1 << 30)) for i in range(2)]
    workers.finals = [p.pid for p in finals]
    async with asyncio.timeout(120):
        codes = await asyncio.gather(*(p.wait() for p in finals))
    assert codes == [0, 0]
    return kills


async def _read_stream(
    nats_url: str, subject: str, *, delete: bool = False
) -> list[dict[str, Any]]:
    """Every event the NATS stream of ``subject`` holds (bodies decoded); ``delete`` drops it."""
    import msgspec
    import nats

    nc = await nats.connect(nats_url)
    try:
        jsm = nc.jsm()
        name = await jsm.find_stream_name_by_subject(subject)
        info = await jsm.stream_info(name)
        events = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            if delete:
                break
            msg = await jsm.get_msg(name, seq)
            events.append(msgspec.json.decode(msg.data or b"{}"))
        if delete:
            await jsm.delete_stream(name)
        return events
    finally:
        await nc.close()


async def _check(workers: Workers, storage: Any, kills: int) -> dict[str, Any]:
    conn = await asyncpg.connect(workers.dsn)
    s = workers.ns
    try:
        effects = await conn.fetch(f"SELECT key, saga_id, step FROM {s}.effects")
        undos = await conn.fetch(f"SELECT key, saga_id, step FROM {s}.undos")
        calls = await conn.fetch(
            f"SELECT key, phase, pid, started_at, ended_at FROM {s}.calls ORDER BY started_at"
        )
        handed = await conn.fetchval(f"SELECT count(*) FROM {s}.published")
    finally:
        await conn.close()
    published = await _read_stream(workers.nats_url, workers.topic)

    # every completed step's effect exactly once per idempotency key; same for compensations
    for rows in (effects, undos):
        keys = [r["key"] for r in rows]
        assert len(keys) == len(set(keys)), "an effect was recorded twice for one key"
    done: dict[str, set[str]] = defaultdict(set)
    undone: dict[str, set[str]] = defaultdict(set)
    for r in effects:
        done[r["saga_id"]].add(r["step"])
    for r in undos:
        undone[r["saga_id"]].add(r["step"])

    events: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for e in published:
        events[e["saga_id"]][e["type"]].add(e.get("step_id", ""))

    for i in range(COUNT):
        saga_id = f"order-{i:04d}"
        saga = await storage.get_saga(saga_id)
        assert saga is not None, f"{saga_id} was never stored"
        kinds = events[saga_id]
        assert "saga.started" in kinds, f"{saga_id}: saga.started missing"
        if _declined(saga_id):
            assert saga.state is SagaState.COMPENSATED, (saga_id, saga.state)
            assert done[saga_id] == {"create-order", "reserve-inventory"}
            assert undone[saga_id] == done[saga_id]  # undid exactly the steps it had done
            assert "saga.failed" in kinds
            assert kinds["compensation.step.completed"] == undone[saga_id], saga_id
        else:
            assert saga.state is SagaState.COMPLETED, (saga_id, saga.state)
            assert done[saga_id] == set(STEPS)
            assert not undone[saga_id]
            assert "saga.completed" in kinds
        assert kinds["saga.step.completed"] == done[saga_id], (saga_id, dict(kinds))

    # no two executions of one step (or one compensation) ever overlapped in time
    intervals: dict[tuple[str, str], list[tuple[datetime, datetime, int]]] = defaultdict(list)
    for r in calls:
        end = r["ended_at"] or workers.killed.get(r["pid"])
        assert end is not None, f"open call of live process {r['pid']}: {dict(r)}"
        intervals[r["key"], r["phase"]].append((r["started_at"], end, r["pid"]))
    final_calls = [sum(r["pid"] == pid for r in calls) for pid in workers.finals]
    reruns = 0
    for where, spans in intervals.items():
        spans.sort()
        reruns += len(spans) - 1
        for (_, prev_end, _), (start, _, _) in itertools.pairwise(spans):
            assert start >= prev_end, f"overlapping executions of {where}: {spans}"
    return {
        "kills": kills,
        "effects": len(effects),
        "undos": len(undos),
        "calls": len(calls),
        "re-executions": reruns,
        "calls_by_the_two_final_workers": final_calls,
        "handed_to_broker": handed,
        "in_nats_stream": len(published),
        "unique_events": len({e["id"] for e in published}),
    }


@pytest.mark.parametrize("kind", ["postgres", "redis"])
async def test_sagas_survive_repeated_sigkill(
    kind: str, postgres_dsn: str, redis_url: str, nats_url: str, unique: str
) -> None:
    ns = f"crash_{kind}_{unique}"
    workers = Workers(kind, ns, postgres_dsn, redis_url, nats_url)
    storage: Any = (
        PostgresStateStorage(postgres_dsn, schema=ns)
        if kind == "postgres"
        else RedisStateStorage(redis_url, prefix=ns)
    )
    seed = int(os.environ.get("SAGAMESH_CRASH_SEED", uuid.uuid4().int % 10_000))
    try:
        kills = await _run_with_kills(workers, random.Random(seed))
        stats = await _check(workers, storage, kills)
        print(f"\ncrash test ({kind}, seed {seed}): {stats}")
        assert kills == KILLS, "a victim finished before it could be killed"
        assert stats["re-executions"] > 0
    finally:
        with contextlib.suppress(Exception):  # the run's NATS stream
            await _read_stream(nats_url, workers.topic, delete=True)
        if isinstance(storage, RedisStateStorage):
            await storage.drop_prefix()
        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{ns}" CASCADE')
        finally:
            await conn.close()
        await storage.close()
