"""The storage-agnostic conformance suite every :class:`StateStorage` must pass.

Subclass it in a test module and override the ``storage`` fixture::

    class TestMyStorage(StorageConformance):
        @pytest.fixture
        async def storage(self):
            store = MyStorage(...)
            yield store
            await store.close()

Every test uses fresh random saga ids and a random ``definition_id``/metadata tag, so runs that
share a server never see each other's records (and the fixture need not wipe anything). Stored
values are JSON-able builtins, as the coordinator hands them to durable stores.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..errors import ConcurrencyConflictError, SagaNotFoundError
from ..events import ErrorType, SagaError
from ..saga.state import TERMINAL_STATES, SagaInstance, SagaState, StepState, StepStatus
from ..saga.storage.base import SagaFilter, StateStorage

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def _id() -> str:
    return f"conf-{uuid.uuid4().hex}"


def make_saga(**overrides: Any) -> SagaInstance:
    fields: dict[str, Any] = {
        "id": _id(),
        "definition_id": f"def-{uuid.uuid4().hex[:8]}",
        "state": SagaState.RUNNING,
        "total_steps": 3,
        "data": {"order_id": "o-1", "amount": 12.5, "items": [1, 2, 3], "note": None},
        "start_time": T0,
        "created_at": T0,
        "updated_at": T0,
        "metadata": {"tenant": "acme"},
        "trace_id": "abc123",
    }
    fields.update(overrides)
    return SagaInstance(**fields)


def _step(saga_id: str, index: int, **overrides: Any) -> StepState:
    fields: dict[str, Any] = {
        "saga_id": saga_id,
        "step_id": f"step-{index}",
        "step_index": index,
        "status": StepStatus.COMPLETED,
        "attempt": 1,
        "input": {"i": index},
        "output": {"o": index, "nested": {"list": [index, "x"]}},
        "started_at": T0,
        "completed_at": T0 + timedelta(milliseconds=5),
    }
    fields.update(overrides)
    return StepState(**fields)


def _error() -> SagaError:
    return SagaError(
        code="CompensationFailed",
        message="refund failed",
        type=ErrorType.COMPENSATION,
        timestamp=T0,
        details={"step": "refund"},
        cause=SagaError(code="card_declined", message="no", type=ErrorType.BUSINESS, timestamp=T0),
    )


_state_st = st.sampled_from(list(SagaState))
_saga_spec = st.tuples(
    _state_st,
    st.sampled_from(["a", "b"]),  # definition suffix
    st.integers(min_value=0, max_value=50),  # minutes after T0 (created_at)
    st.sampled_from(["x", "y", "z"]),  # metadata "k" value
)


class StorageConformance:
    """Override the ``storage`` fixture; every test here must pass for every store."""

    @pytest.fixture
    async def storage(self) -> AsyncIterator[StateStorage]:  # pragma: no cover - overridden
        raise NotImplementedError("override the storage fixture")
        yield

    # -- save / get ----------------------------------------------------------------------------

    async def test_insert_sets_version_one_and_round_trips_every_field(
        self, storage: StateStorage
    ) -> None:
        saga = make_saga(
            error=_error(),
            timeout_at=T0 + timedelta(minutes=30),
            current_step=1,
            completed_steps=1,
            result={"ok": True},
            end_time=None,
        )
        await storage.save_saga(saga)
        assert saga.version == 1
        got = await storage.get_saga(saga.id)
        assert got is not None
        assert got == saga
        assert got.error is not None and got.error.cause is not None
        assert got.error.cause.code == "card_declined"
        assert got.created_at.tzinfo is not None

    async def test_missing_saga_reads_none(self, storage: StateStorage) -> None:
        assert await storage.get_saga(_id()) is None

    async def test_update_increments_version_each_time(self, storage: StateStorage) -> None:
        saga = make_saga()
        await storage.save_saga(saga)
        for expected in range(2, 6):
            saga.current_step += 1
            await storage.save_saga(saga)
            assert saga.version == expected
        got = await storage.get_saga(saga.id)
        assert got is not None and got.version == 5 and got.current_step == 4

    async def test_stored_record_is_isolated_from_the_callers_instance(
        self, storage: StateStorage
    ) -> None:
        saga = make_saga()
        await storage.save_saga(saga)
        saga.metadata["tenant"] = "mutated"
        saga.state = SagaState.FAILED
        got = await storage.get_saga(saga.id)
        assert got is not None
        assert got.metadata["tenant"] == "acme" and got.state is SagaState.RUNNING

    async def test_stale_write_raises_and_changes_nothing(self, storage: StateStorage) -> None:
        saga = make_saga()
        await storage.save_saga(saga)
        first = await storage.get_saga(saga.id)
        second = await storage.get_saga(saga.id)
        assert first is not None and second is not None
        first.current_step = 1
        await storage.save_saga(first)
        second.current_step = 2
        with pytest.raises(ConcurrencyConflictError):
            await storage.save_saga(second)
        got = await storage.get_saga(saga.id)
        assert got is not None and got.current_step == 1 and got.version == 2

    async def test_insert_of_an_existing_id_conflicts(self, storage: StateStorage) -> None:
        saga = make_saga()
        await storage.save_saga(saga)
        with pytest.raises(ConcurrencyConflictError):
            await storage.save_saga(make_saga(id=saga.id))

    async def test_update_of_a_missing_saga_raises_not_found(self, storage: StateStorage) -> None:
        with pytest.raises(SagaNotFoundError):
            await storage.save_saga(make_saga(version=3))

    async def test_concurrent_writers_of_one_version_exactly_one_wins(
        self, storage: StateStorage
    ) -> None:
        saga = make_saga()
        await storage.save_saga(saga)
        copies = [await storage.get_saga(saga.id) for _ in range(8)]

        async def write(i: int, s: SagaInstance | None) -> bool:
            assert s is not None
            s.current_step = i
            try:
                await storage.save_saga(s)
            except ConcurrencyConflictError:
                return False
            return True

        results = await asyncio.gather(*(write(i, s) for i, s in enumerate(copies)))
        assert sum(results) == 1
        got = await storage.get_saga(saga.id)
        assert got is not None and got.version == 2
        assert got.current_step == results.index(True)

    # -- update_saga_state ----------------------------------------------------------------------

    async def test_update_saga_state_changes_state_error_metadata(
        self, storage: StateStorage
    ) -> None:
        saga = make_saga()
        await storage.save_saga(saga)
        version = await storage.update_saga_state(
            saga.id, SagaState.FAILED, expected_version=1, error=_error(), metadata={"why": "x"}
        )
        assert version == 2
        got = await storage.get_saga(saga.id)
        assert got is not None
        assert got.state is SagaState.FAILED and got.version == 2
        assert got.error == _error()
        assert got.metadata == {"tenant": "acme", "why": "x"}
        assert got.end_time is not None  # terminal: end time recorded
        assert got.data == saga.data and got.current_step == saga.current_step

    async def test_update_saga_state_stale_version_conflicts(self, storage: StateStorage) -> None:
        saga = make_saga()
        await storage.save_saga(saga)
        with pytest.raises(ConcurrencyConflictError):
            await storage.update_saga_state(saga.id, SagaState.CANCELLED, expected_version=7)
        got = await storage.get_saga(saga.id)
        assert got is not None and got.state is SagaState.RUNNING and got.version == 1

    async def test_update_saga_state_missing_raises_not_found(self, storage: StateStorage) -> None:
        with pytest.raises(SagaNotFoundError):
            await storage.update_saga_state(_id(), SagaState.FAILED, expected_version=1)

    # -- delete ---------------------------------------------------------------------------------

    async def test_delete_removes_saga_and_steps(self, storage: StateStorage) -> None:
        saga = make_saga()
        await storage.save_saga(saga)
        await storage.save_step_state(_step(saga.id, 0))
        await storage.delete_saga(saga.id)
        assert await storage.get_saga(saga.id) is None
        assert list(await storage.get_step_states(saga.id)) == []
        active = await storage.get_active_sagas(SagaFilter(definition_id=saga.definition_id))
        assert active == []
        await storage.delete_saga(saga.id)  # deleting twice is harmless

    # -- queries --------------------------------------------------------------------------------

    async def test_active_sagas_exclude_terminal_and_follow_the_filter(
        self, storage: StateStorage
    ) -> None:
        definition = f"def-{uuid.uuid4().hex[:8]}"
        sagas = [
            make_saga(definition_id=definition, state=state, created_at=T0 + timedelta(minutes=i))
            for i, state in enumerate(SagaState)
        ]
        for saga in sagas:
            await storage.save_saga(saga)
        active = await storage.get_active_sagas(SagaFilter(definition_id=definition))
        expected = [s.id for s in sagas if s.state not in TERMINAL_STATES]
        assert [s.id for s in active] == expected  # ordered by created_at
        running = await storage.get_active_sagas(
            SagaFilter(definition_id=definition, states=frozenset({SagaState.COMPENSATING}))
        )
        assert [s.state for s in running] == [SagaState.COMPENSATING]
        limited = await storage.get_active_sagas(SagaFilter(definition_id=definition, limit=2))
        assert [s.id for s in limited] == expected[:2]
        window = await storage.get_active_sagas(
            SagaFilter(
                definition_id=definition,
                created_after=T0 + timedelta(minutes=1),
                created_before=T0 + timedelta(minutes=2),
            )
        )
        assert [s.id for s in window] == [sagas[1].id, sagas[2].id]

    @settings(
        max_examples=20,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.differing_executors,  # one subclass per store, run in one session
        ],
    )
    @given(
        specs=st.lists(_saga_spec, min_size=0, max_size=10),
        states=st.none() | st.frozensets(_state_st, min_size=1),
        definition=st.none() | st.sampled_from(["a", "b"]),
        after=st.none() | st.integers(min_value=0, max_value=50),
        before=st.none() | st.integers(min_value=0, max_value=50),
        meta=st.none() | st.sampled_from(["x", "y", "z"]),
        limit=st.none() | st.integers(min_value=1, max_value=5),
    )
    async def test_filter_property_matches_the_reference(
        self,
        storage: StateStorage,
        specs: list[tuple[SagaState, str, int, str]],
        states: frozenset[SagaState] | None,
        definition: str | None,
        after: int | None,
        before: int | None,
        meta: str | None,
        limit: int | None,
    ) -> None:
        tag = uuid.uuid4().hex
        sagas = [
            make_saga(
                state=state,
                definition_id=f"{tag}-{suffix}",
                created_at=T0 + timedelta(minutes=minute, microseconds=i),
                metadata={"run": tag, "k": k},
            )
            for i, (state, suffix, minute, k) in enumerate(specs)
        ]
        try:
            for saga in sagas:
                await storage.save_saga(saga)
            meta_pairs: tuple[tuple[str, Any], ...] = (("run", tag),)
            if meta is not None:
                meta_pairs += (("k", meta),)
            flt = SagaFilter(
                states=states,
                definition_id=None if definition is None else f"{tag}-{definition}",
                created_after=None if after is None else T0 + timedelta(minutes=after),
                created_before=None if before is None else T0 + timedelta(minutes=before),
                metadata=meta_pairs,
                limit=limit,
            )
            expected = sorted(
                (s for s in sagas if not s.is_terminal and flt.matches(s)),
                key=lambda s: s.created_at,
            )
            if limit is not None:
                expected = expected[:limit]
            got = await storage.get_active_sagas(flt)
            assert [s.id for s in got] == [s.id for s in expected]
        finally:
            for saga in sagas:
                await storage.delete_saga(saga.id)

    async def test_timeout_sagas_are_non_terminal_and_due(self, storage: StateStorage) -> None:
        tag = uuid.uuid4().hex
        due = make_saga(timeout_at=T0 - timedelta(days=3650), metadata={"run": tag})
        exact = make_saga(timeout_at=T0 - timedelta(days=3000), metadata={"run": tag})
        later = make_saga(timeout_at=T0 + timedelta(days=1), metadata={"run": tag})
        done = make_saga(
            timeout_at=T0 - timedelta(days=3650), state=SagaState.COMPLETED, metadata={"run": tag}
        )
        none = make_saga(timeout_at=None, metadata={"run": tag})
        for saga in (due, exact, later, done, none):
            await storage.save_saga(saga)
        assert exact.timeout_at is not None
        found = {s.id for s in await storage.get_timeout_sagas(exact.timeout_at)}
        assert due.id in found and exact.id in found
        assert not found & {later.id, done.id, none.id}

    # -- steps ----------------------------------------------------------------------------------

    async def test_step_states_upsert_by_step_and_order_by_index(
        self, storage: StateStorage
    ) -> None:
        saga = make_saga()
        await storage.save_saga(saga)
        for index in (2, 0, 1):
            await storage.save_step_state(_step(saga.id, index, status=StepStatus.RUNNING))
        await storage.save_step_state(
            _step(saga.id, 1, status=StepStatus.COMPENSATION_FAILED, compensation_error=_error(),
                  compensation_attempt=3)
        )
        steps = list(await storage.get_step_states(saga.id))
        assert [s.step_index for s in steps] == [0, 1, 2]
        assert [s.status for s in steps] == [
            StepStatus.RUNNING, StepStatus.COMPENSATION_FAILED, StepStatus.RUNNING
        ]
        assert steps[1] == _step(
            saga.id, 1, status=StepStatus.COMPENSATION_FAILED, compensation_error=_error(),
            compensation_attempt=3,
        )
        assert steps[2].output == {"o": 2, "nested": {"list": [2, "x"]}}

    async def test_step_states_of_unknown_saga_are_empty(self, storage: StateStorage) -> None:
        assert list(await storage.get_step_states(_id())) == []

    # -- cleanup --------------------------------------------------------------------------------

    async def test_cleanup_deletes_only_terminal_sagas_ended_before(
        self, storage: StateStorage
    ) -> None:
        old_end = datetime(1990, 1, 1, tzinfo=UTC)
        old = make_saga(state=SagaState.COMPLETED, end_time=old_end, updated_at=old_end)
        old_failed = make_saga(state=SagaState.FAILED, end_time=old_end, updated_at=old_end)
        recent = make_saga(state=SagaState.COMPENSATED, end_time=T0, updated_at=T0)
        running = make_saga(state=SagaState.RUNNING, updated_at=old_end)
        for saga in (old, old_failed, recent, running):
            await storage.save_saga(saga)
        await storage.save_step_state(_step(old.id, 0))
        removed = await storage.cleanup_expired_sagas(datetime(1991, 1, 1, tzinfo=UTC))
        assert removed >= 2  # other runs' leftovers may be older still
        assert await storage.get_saga(old.id) is None
        assert await storage.get_saga(old_failed.id) is None
        assert list(await storage.get_step_states(old.id)) == []
        assert await storage.get_saga(recent.id) is not None
        assert await storage.get_saga(running.id) is not None
        assert await storage.cleanup_expired_sagas(datetime(1991, 1, 1, tzinfo=UTC)) == 0

    # -- leases ---------------------------------------------------------------------------------

    async def test_lease_is_exclusive_renewable_and_bumps_the_version(
        self, storage: StateStorage
    ) -> None:
        saga = make_saga()
        await storage.save_saga(saga)
        leased = await storage.acquire_lease(saga.id, "a", 30.0)
        assert leased is not None
        assert leased.lease_owner == "a" and leased.version == 2
        assert leased.lease_expires_at is not None
        remaining = (leased.lease_expires_at - datetime.now(UTC)).total_seconds()
        assert 25.0 < remaining <= 30.0
        assert await storage.acquire_lease(saga.id, "b", 30.0) is None
        renewed = await storage.acquire_lease(saga.id, "a", 60.0)
        assert renewed is not None and renewed.version == 3
        assert renewed.lease_expires_at is not None
        assert renewed.lease_expires_at > leased.lease_expires_at
        stored = await storage.get_saga(saga.id)
        assert stored is not None and stored.lease_owner == "a" and stored.version == 3

    async def test_expired_lease_passes_to_another_owner_and_fences_the_old_one(
        self, storage: StateStorage
    ) -> None:
        saga = make_saga()
        await storage.save_saga(saga)
        held = await storage.acquire_lease(saga.id, "a", 0.05)
        assert held is not None
        await asyncio.sleep(0.1)
        taken = await storage.acquire_lease(saga.id, "b", 30.0)
        assert taken is not None and taken.lease_owner == "b"
        held.current_step = 2  # "a" still believes it drives the saga
        with pytest.raises(ConcurrencyConflictError):
            await storage.save_saga(held)
        got = await storage.get_saga(saga.id)
        assert got is not None and got.lease_owner == "b" and got.current_step == 0

    async def test_release_by_owner_frees_release_by_other_does_not(
        self, storage: StateStorage
    ) -> None:
        saga = make_saga()
        await storage.save_saga(saga)
        assert await storage.acquire_lease(saga.id, "a", 30.0) is not None
        await storage.release_lease(saga.id, "b")
        assert await storage.acquire_lease(saga.id, "b", 30.0) is None
        await storage.release_lease(saga.id, "a")
        got = await storage.get_saga(saga.id)
        assert got is not None and got.lease_owner is None
        assert await storage.acquire_lease(saga.id, "b", 30.0) is not None

    async def test_concurrent_lease_acquisition_has_one_winner(
        self, storage: StateStorage
    ) -> None:
        saga = make_saga()
        await storage.save_saga(saga)
        results = await asyncio.gather(
            *(storage.acquire_lease(saga.id, f"owner-{i}", 30.0) for i in range(8))
        )
        winners = [r for r in results if r is not None]
        assert len(winners) == 1
        got = await storage.get_saga(saga.id)
        assert got is not None and got.lease_owner == winners[0].lease_owner

    async def test_lease_on_missing_saga_is_none(self, storage: StateStorage) -> None:
        assert await storage.acquire_lease(_id(), "a", 30.0) is None
        await storage.release_lease(_id(), "a")
