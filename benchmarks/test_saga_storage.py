"""Saga throughput on durable storage and recovery time of a crashed worker's backlog.

Run: .venv/bin/pytest benchmarks/test_saga_storage.py --benchmark-enable -q -s
(needs Redis and PostgreSQL on loopback, see scripts/services.sh)

* ``test_four_step_sagas_per_second``: one coordinator (64 sagas at once) runs SAGAS_PER_ROUND
  4-step no-op sagas to the end per round on Redis, PostgreSQL, and PostgreSQL with the
  transactional outbox (events committed with the state). Every saga does 5 state writes and
  4 step-record writes, as in production.
* ``test_recovery_of_1000_in_flight_sagas``: 1,000 sagas are left RUNNING at step 3 of 4 with no
  live lease (as a killed worker leaves them); a fresh coordinator's ``recover()`` adopts them
  all and drives them to the end. Reported: time to adopt, and time until all are terminal.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from sagamesh.outbox import saga_event_encoder
from sagamesh.saga import (
    ConcurrencyConfig,
    InMemoryEventPublisher,
    SagaCoordinator,
    SagaDefinition,
    StepContext,
    step,
)
from sagamesh.saga.state import SagaInstance, SagaState, StepState, StepStatus
from sagamesh.saga.storage.postgres import PostgresStateStorage
from sagamesh.saga.storage.redis import RedisStateStorage
from sagamesh.testing.services import require_service, service_url

SAGAS_PER_ROUND = 300
IN_FLIGHT = 1_000


async def _noop(ctx: StepContext, data: Any) -> Any:
    return data


DEFINITION = SagaDefinition("order-noop", steps=[step(f"s{i}", _noop) for i in range(4)])


def _need(service: str) -> str:
    return require_service(service, service_url(service))


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _storage(kind: str) -> Any:
    ns = f"bench_{uuid.uuid4().hex[:8]}"
    if kind == "redis":
        return RedisStateStorage(_need("redis"), prefix=ns)
    return PostgresStateStorage(_need("postgres"), schema=ns, max_pool_size=20,
                                synchronous_commit=kind != "postgres-async-commit")


async def _drop(storage: Any) -> None:
    if isinstance(storage, RedisStateStorage):
        await storage.drop_prefix()
    else:
        await storage.drop_schema()
    await storage.close()


def _coordinator(storage: Any, outbox: bool) -> SagaCoordinator:
    return SagaCoordinator(
        storage,
        InMemoryEventPublisher(),
        ConcurrencyConfig(max_concurrent_sagas=64, worker_pool_size=64, acquire_timeout=60),
        outbox=saga_event_encoder() if outbox else None,
    )


async def _round(coordinator: SagaCoordinator, n: int) -> None:
    ids = [(await coordinator.start_saga(DEFINITION, {"n": i})).id for i in range(n)]
    for saga_id in ids:
        await coordinator.wait_for_completion(saga_id, timeout=120)


@pytest.mark.parametrize(
    "kind", ["redis", "postgres", "postgres+outbox", "postgres-async-commit"]
)
def test_four_step_sagas_per_second(
    benchmark: Any, loop: asyncio.AbstractEventLoop, kind: str
) -> None:
    storage = _storage(kind.split("+")[0])
    coordinator = _coordinator(storage, outbox=kind.endswith("outbox"))
    coordinator.register(DEFINITION)
    loop.run_until_complete(coordinator.start())

    def run() -> None:
        loop.run_until_complete(_round(coordinator, SAGAS_PER_ROUND))

    try:
        benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    finally:
        loop.run_until_complete(coordinator.close())
        loop.run_until_complete(_drop(storage))
    metrics = coordinator.get_metrics()
    assert metrics.completed_sagas == SAGAS_PER_ROUND * 4
    stats = benchmark.stats.stats
    benchmark.extra_info["sagas_per_s"] = round(SAGAS_PER_ROUND / stats.mean)
    benchmark.extra_info["sagas_per_s_best"] = round(SAGAS_PER_ROUND / stats.min)
    print(f"\n{kind}: {SAGAS_PER_ROUND / stats.mean:.0f} sagas/s "
          f"(best round {SAGAS_PER_ROUND / stats.min:.0f})")


async def _leave_in_flight(storage: Any, n: int) -> list[str]:
    """What a worker killed inside step 3 leaves behind: RUNNING sagas, steps 1-2 recorded."""
    now = datetime.now(UTC)
    ids = [f"inflight-{i:05d}" for i in range(n)]
    gate = asyncio.Semaphore(32)

    async def one(saga_id: str) -> None:
        async with gate:
            await storage.save_saga(SagaInstance(
                id=saga_id, definition_id=DEFINITION.id, state=SagaState.RUNNING,
                current_step=2, completed_steps=2, total_steps=4, data={"n": 1},
                start_time=now, created_at=now, updated_at=now,
            ))
            for index in range(2):
                await storage.save_step_state(StepState(
                    saga_id, f"s{index}", index, StepStatus.COMPLETED, 1, output={"n": 1},
                    started_at=now, completed_at=now,
                ))

    await asyncio.gather(*(one(s) for s in ids))
    return ids


async def _recover(storage: Any, ids: list[str]) -> tuple[float, float, int]:
    coordinator = _coordinator(storage, outbox=False)
    coordinator.register(DEFINITION)
    began = time.perf_counter()
    adopted = await coordinator.recover()
    adopted_after = time.perf_counter() - began
    for saga_id in ids:
        await coordinator.wait_for_completion(saga_id, timeout=300)
    done_after = time.perf_counter() - began
    await coordinator.close()
    return adopted_after, done_after, adopted


@pytest.mark.parametrize("kind", ["redis", "postgres"])
def test_recovery_of_1000_in_flight_sagas(
    benchmark: Any, loop: asyncio.AbstractEventLoop, kind: str
) -> None:
    results: list[tuple[float, float, int]] = []

    async def setup_and_recover() -> None:
        storage = _storage(kind)
        try:
            ids = await _leave_in_flight(storage, IN_FLIGHT)
            results.append(await _recover(storage, ids))
            states = {s.state for s in await _all(storage, ids)}
            assert states == {SagaState.COMPLETED}
        finally:
            await _drop(storage)

    benchmark.pedantic(lambda: loop.run_until_complete(setup_and_recover()), rounds=2,
                       iterations=1)
    adopt = min(r[0] for r in results)
    done = min(r[1] for r in results)
    assert all(r[2] == IN_FLIGHT for r in results)
    benchmark.extra_info["adopt_s"] = round(adopt, 3)
    benchmark.extra_info["all_terminal_s"] = round(done, 3)
    print(f"\n{kind}: recover() adopted {IN_FLIGHT} in-flight sagas in {adopt:.2f} s; "
          f"all terminal after {done:.2f} s")


async def _all(storage: Any, ids: list[str]) -> list[Any]:
    return [await storage.get_saga(s) for s in ids]
