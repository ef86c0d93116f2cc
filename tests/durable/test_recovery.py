"""Crash recovery in one process: a coordinator is abandoned mid-saga (as if its process died,
leaving its leases behind) and a second one, with a fresh storage client, takes over."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel

from sagamesh.brokers.memory import MemoryBroker
from sagamesh.errors import BusinessError
from sagamesh.events import EventType
from sagamesh.outbox import PostgresOutbox, outbox_relay, saga_event_encoder
from sagamesh.saga import (
    InMemoryEventPublisher,
    SagaCoordinator,
    SagaDefinition,
    SagaState,
    StepContext,
    step,
)
from sagamesh.saga.storage.base import StateStorage
from sagamesh.saga.storage.postgres import PostgresStateStorage
from sagamesh.saga.storage.redis import RedisStateStorage
from sagamesh.serialization import from_message
from sagamesh.testing.services import service_url

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

LEASE = 0.6  # short, so a dead coordinator's sagas are adoptable quickly


class OrderModel(BaseModel):
    order_id: str
    amount: float
    steps: list[str] = []


@dataclasses.dataclass
class OrderData:
    order_id: str
    amount: float
    steps: list[str] = dataclasses.field(default_factory=list)


def _mk(kind: str, order_id: str) -> Any:
    if kind == "pydantic":
        return OrderModel(order_id=order_id, amount=9.5)
    if kind == "dataclass":
        return OrderData(order_id=order_id, amount=9.5)
    return {"order_id": order_id, "amount": 9.5, "steps": []}


def _steps_of(data: Any) -> list[str]:
    return list(data["steps"] if isinstance(data, dict) else data.steps)


def _with_step(data: Any, name: str) -> Any:
    if isinstance(data, dict):
        return {**data, "steps": [*data["steps"], name]}
    if isinstance(data, BaseModel):
        return data.model_copy(update={"steps": [*data.steps, name]})
    return dataclasses.replace(data, steps=[*data.steps, name])


StorageFactory = Callable[[], StateStorage]


@pytest.fixture(params=["redis", "postgres"])
async def storages(
    request: pytest.FixtureRequest, unique: str
) -> AsyncIterator[StorageFactory]:
    """Makes storage clients on one namespace: each new one is a 'restarted process'."""
    kind = request.param
    request.getfixturevalue("redis_url" if kind == "redis" else "postgres_dsn")
    made: list[Any] = []

    def make() -> StateStorage:
        store: Any
        if kind == "redis":
            store = RedisStateStorage(service_url("redis"), prefix=f"test-rec-{unique}")
        else:
            store = PostgresStateStorage(service_url("postgres"), schema=f"test_rec_{unique}")
        made.append(store)
        return store  # type: ignore[no-any-return]

    yield make
    cleanup = made[0] if made else None
    if isinstance(cleanup, RedisStateStorage):
        await cleanup.drop_prefix()
    elif isinstance(cleanup, PostgresStateStorage):
        await cleanup.drop_schema()
    for store in made:
        await store.close()


class Services:
    """Step bodies that log every call and can be told to hang (to be 'killed' mid-step)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, int]] = []  # (phase, step, idem key, attempt)
        self.inputs: dict[str, list[Any]] = defaultdict(list)
        self.hang: set[tuple[str, str]] = set()  # (phase, step) that block forever
        self.entered: dict[tuple[str, str], asyncio.Event] = defaultdict(asyncio.Event)
        self.fail: set[str] = set()

    def execute(self, name: str) -> Any:
        async def run(ctx: StepContext, data: Any) -> Any:
            self.calls.append(("do", name, ctx.idempotency_key, ctx.attempt))
            self.inputs[name].append(data)
            self.entered["do", name].set()
            if ("do", name) in self.hang:
                await asyncio.Event().wait()
            if name in self.fail:
                raise BusinessError("declined", f"{name} said no")
            return _with_step(data, name)

        return run

    def compensate(self, name: str) -> Any:
        async def run(ctx: StepContext, data: Any) -> None:
            self.calls.append(("undo", name, ctx.idempotency_key, ctx.attempt))
            self.entered["undo", name].set()
            if ("undo", name) in self.hang:
                await asyncio.Event().wait()

        return run


def _definition(services: Services, data_type: Any, timeout: float | None = None) -> SagaDefinition:
    return SagaDefinition(
        id="order",
        steps=[
            step(n, services.execute(n), services.compensate(n), output_type=data_type)
            for n in ("create", "reserve", "pay")
        ],
        data_type=data_type,
        timeout=timeout,
    )


async def until(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    """Poll an external system (storage) until ``check`` holds; fails after ``within`` s."""
    async with asyncio.timeout(within):
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)


async def _recover_until_adopted(coordinator: SagaCoordinator, count: int) -> None:
    adopted = 0
    async with asyncio.timeout(30):
        while adopted < count:
            adopted += await coordinator.recover()
            if adopted < count:
                await asyncio.sleep(LEASE / 4)


@pytest.mark.parametrize("kind", ["pydantic", "dataclass", "dict"])
async def test_restart_resumes_the_in_flight_step_with_typed_data(
    storages: StorageFactory, kind: str
) -> None:
    data_type = {"pydantic": OrderModel, "dataclass": OrderData, "dict": None}[kind]
    before, after = Services(), Services()
    before.hang.add(("do", "reserve"))
    a = SagaCoordinator(storages(), lease_ttl=LEASE)
    a.register(_definition(before, data_type))
    saga_id = f"o-{uuid.uuid4().hex[:8]}"
    await a.start_saga("order", _mk(kind, saga_id), saga_id=saga_id)
    await asyncio.wait_for(before.entered["do", "reserve"].wait(), 10)
    await a.abandon()  # the process "dies" inside reserve

    b = SagaCoordinator(storages(), lease_ttl=LEASE)
    b.register(_definition(after, data_type))
    await _recover_until_adopted(b, 1)
    final = await b.wait_for_completion(saga_id, timeout=20)
    await b.close()

    assert final.state is SagaState.COMPLETED
    assert [c[1] for c in after.calls] == ["reserve", "pay"]  # create is not run again
    resumed = after.inputs["reserve"][0]
    expected_type = dict if data_type is None else data_type
    assert isinstance(resumed, expected_type)  # rehydrated through data_type
    assert _steps_of(resumed) == ["create"]
    assert after.calls[0][2] == before.calls[1][2] == f"{saga_id}:reserve"  # same key
    assert isinstance(final.result, expected_type)
    assert _steps_of(final.result) == ["create", "reserve", "pay"]


async def test_restart_continues_an_interrupted_compensation(storages: StorageFactory) -> None:
    before, after = Services(), Services()
    before.fail.add("pay")
    before.hang.add(("undo", "reserve"))
    a = SagaCoordinator(storages(), lease_ttl=LEASE)
    a.register(_definition(before, None))
    saga_id = f"c-{uuid.uuid4().hex[:8]}"
    await a.start_saga("order", _mk("dict", saga_id), saga_id=saga_id)
    await asyncio.wait_for(before.entered["undo", "reserve"].wait(), 10)
    await a.abandon()

    b = SagaCoordinator(storages(), lease_ttl=LEASE)
    b.register(_definition(after, None))
    await _recover_until_adopted(b, 1)
    final = await b.wait_for_completion(saga_id, timeout=20)
    await b.close()

    assert final.state is SagaState.COMPENSATED
    assert [(c[0], c[1]) for c in after.calls] == [("undo", "reserve"), ("undo", "create")]
    assert after.calls[0][2] == f"{saga_id}:reserve"
    assert final.error is not None and final.error.code == "declined"


async def test_saga_past_its_deadline_in_storage_ends_timed_out(storages: StorageFactory) -> None:
    before, after = Services(), Services()
    before.hang.add(("do", "reserve"))
    a = SagaCoordinator(storages(), lease_ttl=LEASE)
    a.register(_definition(before, None, timeout=1.0))
    saga_id = f"t-{uuid.uuid4().hex[:8]}"
    await a.start_saga("order", _mk("dict", saga_id), saga_id=saga_id)
    await asyncio.wait_for(before.entered["do", "reserve"].wait(), 10)
    await a.abandon()
    store = storages()

    async def past_deadline() -> bool:
        return bool(await store.get_timeout_sagas(datetime.now(UTC)))

    await until(past_deadline)  # the stored deadline passed while nobody drove the saga

    b = SagaCoordinator(store, lease_ttl=LEASE)
    b.register(_definition(after, None, timeout=1.0))
    await _recover_until_adopted(b, 1)
    final = await b.wait_for_completion(saga_id, timeout=20)
    await b.close()
    assert final.state is SagaState.TIMED_OUT
    assert [(c[0], c[1]) for c in after.calls] == [("undo", "create")]


async def test_two_coordinators_recovering_at_once_never_run_a_step_twice_concurrently(
    storages: StorageFactory,
) -> None:
    loop = asyncio.get_running_loop()
    intervals: dict[tuple[str, str], list[tuple[float, float, str]]] = defaultdict(list)

    def timed(name: str, who: str, hang: bool) -> Any:
        async def run(ctx: StepContext, data: Any) -> Any:
            began = loop.time()
            if hang:
                await asyncio.Event().wait()
            await asyncio.sleep(0.01)
            intervals[ctx.saga_id, name].append((began, loop.time(), who))
            return data

        return run

    def definition(who: str, hang_pay: bool) -> SagaDefinition:
        return SagaDefinition(
            id="order",
            steps=[step(n, timed(n, who, hang_pay and n == "pay")) for n in ("create", "pay")],
        )

    a = SagaCoordinator(storages(), lease_ttl=LEASE)
    a.register(definition("a", True))
    ids = [f"r-{i}-{uuid.uuid4().hex[:6]}" for i in range(20)]
    for saga_id in ids:
        await a.start_saga("order", {"n": 1}, saga_id=saga_id)

    async def creates_done() -> bool:  # every create done, every pay hanging
        return sum(len(v) for v in intervals.values()) >= 20

    await until(creates_done)
    await a.abandon()

    b = SagaCoordinator(storages(), lease_ttl=LEASE, instance_id="b")
    c = SagaCoordinator(storages(), lease_ttl=LEASE, instance_id="c")
    b.register(definition("b", False))
    c.register(definition("c", False))
    await asyncio.sleep(LEASE)  # a's leases expire
    adopted = await asyncio.gather(b.recover(), c.recover())
    async with asyncio.timeout(20):
        while sum(adopted) < 20:
            adopted = [adopted[0] + await b.recover(), adopted[1] + await c.recover()]
    finals = [await (b if i % 2 else c).wait_for_completion(s, timeout=20) for i, s in
              enumerate(ids)]
    await b.close()
    await c.close()
    assert {f.state for f in finals} == {SagaState.COMPLETED}
    for saga_id in ids:
        runs = intervals[saga_id, "pay"]
        assert len(runs) == 1, runs  # adopted by exactly one coordinator
        assert len(intervals[saga_id, "create"]) == 1
    assert sum(adopted) == 20


@pytest.mark.postgres
async def test_outbox_mode_commits_events_with_state_and_relays_them(
    postgres_dsn: str, unique: str
) -> None:
    schema = f"test_obx_{unique}"
    storage = PostgresStateStorage(postgres_dsn, schema=schema)
    outbox = PostgresOutbox(postgres_dsn, schema=schema)
    broker = MemoryBroker()
    await broker.connect()
    received: list[Any] = []
    arrived = asyncio.Event()

    async def consume(delivery: Any) -> None:
        received.append(from_message(delivery.message))
        arrived.set()

    await broker.subscribe("saga.events", consume, ordered=True)
    relay = outbox_relay(outbox, broker)
    services = Services()
    services.fail.add("pay")
    direct = InMemoryEventPublisher(history=1000)
    coordinator = SagaCoordinator(storage, direct, outbox=saga_event_encoder("saga.events"))
    coordinator.register(_definition(services, None))
    try:
        ok = await coordinator.start_saga("order", _mk("dict", "x"), saga_id=f"ok-{unique}")
        await coordinator.wait_for_completion(ok.id, timeout=20)
        services.fail.clear()
        done = await coordinator.start_saga("order", _mk("dict", "y"), saga_id=f"ok2-{unique}")
        await coordinator.wait_for_completion(done.id, timeout=20)
        async with asyncio.timeout(20):
            while sum(e.type in (EventType.SAGA_COMPLETED, EventType.SAGA_FAILED)
                      for e in received) < 2:
                arrived.clear()
                await arrived.wait()
        await coordinator.close()
    finally:
        await relay.close(drain_within=5)
        await broker.close()
        await outbox.close()
        await storage.drop_schema()
        await storage.close()
    assert direct.published_count == 0  # in outbox mode nothing bypasses the outbox
    by_saga: dict[str, list[str]] = defaultdict(list)
    for event in received:
        by_saga[event.saga_id].append(str(event.type))
    assert by_saga[f"ok2-{unique}"][0] == "saga.started"
    assert by_saga[f"ok2-{unique}"][-1] == "saga.completed"
    assert Counter(by_saga[f"ok2-{unique}"])["saga.step.completed"] == 3
    failed = by_saga[f"ok-{unique}"]
    assert failed[0] == "saga.started" and failed[-1] == "saga.failed"
    assert Counter(failed)["compensation.step.completed"] == 2
    assert len({e.id for e in received}) == len(received)
