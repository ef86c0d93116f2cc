"""Behaviour specific to the durable stores (beyond the shared conformance suite): JSON records,
fencing of stale lease holders, contention, atomic outbox writes, schema migration."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from sagamesh.errors import ConcurrencyConflictError, ConfigError, SagaNotFoundError
from sagamesh.events import ErrorType, SagaError
from sagamesh.message import Message
from sagamesh.saga.state import SagaInstance, SagaState, StepState, StepStatus
from sagamesh.saga.storage.base import SagaFilter, StateStorage
from sagamesh.saga.storage.postgres import PostgresStateStorage
from sagamesh.saga.storage.redis import RedisStateStorage

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

Storage = RedisStateStorage | PostgresStateStorage


def _saga(saga_id: str, **kw: Any) -> SagaInstance:
    now = datetime.now(UTC)
    base: dict[str, Any] = {
        "definition_id": "order",
        "state": SagaState.RUNNING,
        "total_steps": 4,
        "data": {"order_id": saga_id, "amount": 12.5, "items": ["a", "b"]},
        "created_at": now,
        "updated_at": now,
        "start_time": now,
    }
    base.update(kw)
    return SagaInstance(id=saga_id, **base)


async def test_is_a_state_storage(durable_storage: Storage) -> None:
    assert isinstance(durable_storage, StateStorage)


async def test_every_field_round_trips(durable_storage: Storage) -> None:
    err = SagaError(
        code="E1", message="boom", type=ErrorType.BUSINESS, details={"k": [1, 2]},
        cause=SagaError(code="E0", message="root"),
    )
    now = datetime.now(UTC).replace(microsecond=123000)
    saga = _saga(
        "rt-1", current_step=2, completed_steps=2, result={"ok": True}, error=err,
        end_time=now, metadata={"tenant": "t1", "n": 3}, trace_id="abc",
        timeout_at=now + timedelta(minutes=5), created_at=now, updated_at=now, start_time=now,
    )
    await durable_storage.save_saga(saga)
    assert saga.version == 1
    got = await durable_storage.get_saga("rt-1")
    assert got is not None
    assert dataclasses.asdict(got) == dataclasses.asdict(saga)


async def test_pydantic_and_dataclass_data_is_stored_as_json(durable_storage: Storage) -> None:
    class Order(BaseModel):
        order_id: str
        when: datetime

    @dataclasses.dataclass
    class Line:
        sku: str
        qty: int

    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    saga = _saga("data-1", data=Order(order_id="o1", when=when), result=Line("s", 2))
    await durable_storage.save_saga(saga)
    got = await durable_storage.get_saga("data-1")
    assert got is not None
    assert got.data == {"order_id": "o1", "when": "2024-01-02T03:04:05Z"}
    assert got.result == {"sku": "s", "qty": 2}


async def test_unstorable_data_is_a_typed_error_and_writes_nothing(
    durable_storage: Storage,
) -> None:
    from sagamesh.errors import SerializationError

    saga = _saga("bad-1", data={"x": object()})
    with pytest.raises(SerializationError):
        await durable_storage.save_saga(saga)
    assert await durable_storage.get_saga("bad-1") is None
    assert saga.version == 0


async def test_stale_writes_conflict_and_versions_count_writes(durable_storage: Storage) -> None:
    saga = _saga("v-1")
    await durable_storage.save_saga(saga)
    stale = await durable_storage.get_saga("v-1")
    assert stale is not None
    for expected in (2, 3, 4):
        saga.current_step += 1
        await durable_storage.save_saga(saga)
        assert saga.version == expected
    with pytest.raises(ConcurrencyConflictError):
        await durable_storage.save_saga(stale)
    with pytest.raises(ConcurrencyConflictError):  # inserting an id that exists
        await durable_storage.save_saga(_saga("v-1"))
    with pytest.raises(ConcurrencyConflictError):
        await durable_storage.update_saga_state("v-1", SagaState.FAILED, expected_version=1)
    got = await durable_storage.get_saga("v-1")
    assert got is not None and got.version == 4 and got.current_step == 3
    assert got.state is SagaState.RUNNING
    with pytest.raises(SagaNotFoundError):
        await durable_storage.update_saga_state("nope", SagaState.FAILED, expected_version=1)
    with pytest.raises(SagaNotFoundError):
        await durable_storage.save_saga(_saga("nope", version=3))


async def test_update_state_merges_metadata_and_stamps_end(durable_storage: Storage) -> None:
    saga = _saga("u-1", metadata={"a": 1})
    await durable_storage.save_saga(saga)
    err = SagaError(code="X", message="y")
    version = await durable_storage.update_saga_state(
        "u-1", SagaState.FAILED, expected_version=1, error=err, metadata={"b": 2}
    )
    assert version == 2
    got = await durable_storage.get_saga("u-1")
    assert got is not None
    assert got.state is SagaState.FAILED and got.error == err
    assert got.metadata == {"a": 1, "b": 2}
    assert got.end_time is not None
    assert await durable_storage.get_active_sagas() == []


async def test_concurrent_writers_exactly_one_wins(durable_storage: Storage) -> None:
    await durable_storage.save_saga(_saga("c-1"))
    copies = [await durable_storage.get_saga("c-1") for _ in range(12)]

    async def write(copy: SagaInstance | None) -> bool:
        assert copy is not None
        copy.current_step = 1
        try:
            await durable_storage.save_saga(copy)
        except ConcurrencyConflictError:
            return False
        return True

    results = await asyncio.gather(*(write(c) for c in copies))
    assert sum(results) == 1
    got = await durable_storage.get_saga("c-1")
    assert got is not None and got.version == 2


async def test_indexes_active_timeouts_and_filters(durable_storage: Storage) -> None:
    now = datetime.now(UTC)
    for i in range(6):
        await durable_storage.save_saga(
            _saga(
                f"i-{i}",
                definition_id="a" if i % 2 else "b",
                created_at=now + timedelta(seconds=i),
                timeout_at=now + timedelta(seconds=10 * i),
                metadata={"tenant": f"t{i % 3}"},
                state=SagaState.COMPENSATING if i == 5 else SagaState.RUNNING,
            )
        )
    done = await durable_storage.get_saga("i-0")
    assert done is not None
    done.state = SagaState.COMPLETED
    await durable_storage.save_saga(done)

    active = await durable_storage.get_active_sagas()
    assert [s.id for s in active] == ["i-1", "i-2", "i-3", "i-4", "i-5"]
    by_def = await durable_storage.get_active_sagas(SagaFilter(definition_id="a"))
    assert [s.id for s in by_def] == ["i-1", "i-3", "i-5"]
    comp = await durable_storage.get_active_sagas(
        SagaFilter(states=frozenset({SagaState.COMPENSATING}))
    )
    assert [s.id for s in comp] == ["i-5"]
    tenant = await durable_storage.get_active_sagas(SagaFilter(metadata=(("tenant", "t1"),)))
    assert [s.id for s in tenant] == ["i-1", "i-4"]
    window = await durable_storage.get_active_sagas(
        SagaFilter(
            created_after=now + timedelta(seconds=2), created_before=now + timedelta(seconds=4)
        )
    )
    assert [s.id for s in window] == ["i-2", "i-3", "i-4"]
    assert len(await durable_storage.get_active_sagas(SagaFilter(limit=2))) == 2

    timed_out = await durable_storage.get_timeout_sagas(now + timedelta(seconds=25))
    assert sorted(s.id for s in timed_out) == ["i-1", "i-2"]  # i-0 is terminal


async def test_steps_upsert_and_come_back_ordered(durable_storage: Storage) -> None:
    await durable_storage.save_saga(_saga("s-1"))
    for index, step_id in reversed(list(enumerate(["create", "reserve", "pay"]))):
        await durable_storage.save_step_state(
            StepState(saga_id="s-1", step_id=step_id, step_index=index, status=StepStatus.RUNNING,
                      attempt=1, input={"i": index})
        )
    await durable_storage.save_step_state(
        StepState(saga_id="s-1", step_id="reserve", step_index=1, status=StepStatus.COMPLETED,
                  attempt=2, input={"i": 1}, output={"reservation": "r1"},
                  error=SagaError(code="T", message="first try timed out"))
    )
    steps = await durable_storage.get_step_states("s-1")
    assert [s.step_id for s in steps] == ["create", "reserve", "pay"]
    assert steps[1].status is StepStatus.COMPLETED and steps[1].attempt == 2
    assert steps[1].output == {"reservation": "r1"}
    assert steps[1].error is not None and steps[1].error.code == "T"
    await durable_storage.delete_saga("s-1")
    assert await durable_storage.get_saga("s-1") is None
    assert list(await durable_storage.get_step_states("s-1")) == []


async def test_cleanup_removes_only_old_terminal_sagas(durable_storage: Storage) -> None:
    now = datetime.now(UTC)
    old, recent, active = _saga("old"), _saga("recent"), _saga("active")
    old.state, old.end_time = SagaState.COMPLETED, now - timedelta(days=2)
    recent.state, recent.end_time = SagaState.COMPENSATED, now
    active.created_at = now - timedelta(days=3)
    for s in (old, recent, active):
        await durable_storage.save_saga(s)
    await durable_storage.save_step_state(StepState(saga_id="old", step_id="x", step_index=0))
    assert await durable_storage.cleanup_expired_sagas(now - timedelta(days=1)) == 1
    assert await durable_storage.get_saga("old") is None
    assert list(await durable_storage.get_step_states("old")) == []
    assert await durable_storage.get_saga("recent") is not None
    assert await durable_storage.get_saga("active") is not None
    assert await durable_storage.cleanup_expired_sagas(now - timedelta(days=1)) == 0


async def test_leases_exclude_renew_expire_and_fence(durable_storage: Storage) -> None:
    await durable_storage.save_saga(_saga("l-1"))
    a = await durable_storage.acquire_lease("l-1", "A", ttl=0.5)
    assert a is not None and a.lease_owner == "A" and a.version == 2
    assert await durable_storage.acquire_lease("l-1", "B", ttl=5) is None
    renewed = await durable_storage.acquire_lease("l-1", "A", ttl=0.5)
    assert renewed is not None and renewed.version == 3
    assert renewed.lease_expires_at is not None and a.lease_expires_at is not None
    assert renewed.lease_expires_at >= a.lease_expires_at
    await asyncio.sleep(0.6)  # the lease runs out; B may take over
    b = await durable_storage.acquire_lease("l-1", "B", ttl=30)
    assert b is not None and b.lease_owner == "B" and b.version == 4
    # Fencing: A still holds its copy (version 3) and must not be able to write any more.
    renewed.current_step = 3
    with pytest.raises(ConcurrencyConflictError):
        await durable_storage.save_saga(renewed)
    await durable_storage.release_lease("l-1", "A")  # not the holder: no effect
    got = await durable_storage.get_saga("l-1")
    assert got is not None and got.lease_owner == "B" and got.current_step == 0
    await durable_storage.release_lease("l-1", "B")
    got = await durable_storage.get_saga("l-1")
    assert got is not None and got.lease_owner is None
    assert await durable_storage.acquire_lease("missing", "A", ttl=1) is None


async def test_contending_coordinators_one_lease(durable_storage: Storage) -> None:
    await durable_storage.save_saga(_saga("l-2"))
    got = await asyncio.gather(
        *(durable_storage.acquire_lease("l-2", f"owner-{i}", ttl=30) for i in range(16))
    )
    winners = [g.lease_owner for g in got if g is not None]
    assert len(winners) == 1
    stored = await durable_storage.get_saga("l-2")
    assert stored is not None and stored.lease_owner == winners[0]


async def test_outbox_messages_commit_with_the_state_or_not_at_all(
    durable_storage: Storage,
) -> None:
    saga = _saga("o-1")
    msgs = [Message(id=f"m{i}", topic="saga.x", body=b"b%d" % i, key="o-1") for i in range(3)]
    await durable_storage.save_saga(saga, outbox_messages=msgs[:2])
    stale = await durable_storage.get_saga("o-1")
    assert stale is not None
    await durable_storage.save_saga(saga, outbox_messages=msgs[2:])
    with pytest.raises(ConcurrencyConflictError):
        await durable_storage.save_saga(stale, outbox_messages=[Message(id="lost", topic="t")])
    assert await _outbox_ids(durable_storage) == ["m0", "m1", "m2"]


async def _outbox_ids(storage: Storage) -> list[str]:
    if isinstance(storage, RedisStateStorage):
        from sagamesh.saga.storage.records import decode_json

        entries = await storage.client.xrange(storage.outbox_stream)
        return [decode_json(fields[b"m"])["id"] for _, fields in entries]
    pool = await storage.pool()
    rows = await pool.fetch(f'SELECT message_id FROM "{storage.schema}".outbox ORDER BY id')
    return [r["message_id"] for r in rows]


@pytest.mark.postgres
async def test_postgres_migration_is_idempotent_and_concurrent(
    postgres_dsn: str, unique: str
) -> None:
    schema = f"test_migrate_{unique}"
    stores = [PostgresStateStorage(postgres_dsn, schema=schema) for _ in range(3)]
    try:
        assert await asyncio.gather(*(s.migrate() for s in stores)) == [1, 1, 1]
        assert await stores[0].migrate() == 1
        pool = await stores[0].pool()
        assert await pool.fetchval(f'SELECT count(*) FROM "{schema}".schema_version') == 1
        tables = await pool.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
        )
        assert {r["table_name"] for r in tables} == {
            "sagas", "saga_steps", "outbox", "schema_version"
        }
        indexes = await pool.fetch("SELECT indexname FROM pg_indexes WHERE schemaname = $1", schema)
        names = {r["indexname"] for r in indexes}
        assert {"sagas_state_idx", "sagas_active_idx", "sagas_timeout_idx"} <= names
    finally:
        await stores[0].drop_schema()
        for s in stores:
            await s.close()


@pytest.mark.postgres
async def test_postgres_first_use_migrates_and_user_connection_joins(
    postgres_dsn: str, unique: str
) -> None:
    import asyncpg

    schema = f"test_first_use_{unique}"
    storage = PostgresStateStorage(postgres_dsn, schema=schema)
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await storage.save_saga(_saga("f-1"))  # no migrate() call first
        assert (await storage.get_saga("f-1")) is not None
        saga = _saga("f-2")
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await storage.save_saga(
                    saga, outbox_messages=[Message(id="e", topic="t")], connection=conn
                )
                raise RuntimeError("business write failed")
        assert await storage.get_saga("f-2") is None
        assert await _outbox_ids(storage) == []
    finally:
        await conn.close()
        await storage.drop_schema()
        await storage.close()


def test_bad_configuration_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        PostgresStateStorage("postgresql://x", schema="bad schema; drop")
    with pytest.raises(ConfigError):
        PostgresStateStorage()
    with pytest.raises(ConfigError):
        RedisStateStorage()
    with pytest.raises(ConfigError):
        RedisStateStorage("redis://x", prefix="has space")


async def test_a_task_looping_over_the_storage_stops_when_cancelled(
    durable_storage: Storage,
) -> None:
    """redis-py's send path uses asyncio.wait_for, which on Python 3.11 can drop a cancel that
    lands as a reply arrives; the storage re-raises it so owned loops (keepers, relays) stop."""
    await durable_storage.save_saga(_saga("cancel-1"))

    async def poll() -> None:
        while True:
            await durable_storage.get_saga("cancel-1")

    for i in range(30):
        task = asyncio.create_task(poll())
        await asyncio.sleep(0.002 * (i % 5 + 1))
        task.cancel()
        async with asyncio.timeout(5):
            with pytest.raises(asyncio.CancelledError):
                await task
