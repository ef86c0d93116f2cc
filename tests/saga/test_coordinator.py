"""Coordinator API: start/wait/get, idempotent start, concurrency limits, close, metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sagamesh.errors import (
    ConfigError,
    CoordinatorClosedError,
    CoordinatorSaturatedError,
    SagaDefinitionError,
    SagaNotFoundError,
)
from sagamesh.saga import (
    ConcurrencyConfig,
    MemoryStateStorage,
    SagaCoordinator,
    SagaDefinition,
    SagaFilter,
    SagaState,
    StepContext,
    step,
)

from .helpers import Recorder, declined, make_coordinator, passthrough, wait_until


class Gate:
    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.entered = 0
        self.active = 0
        self.peak = 0

    async def __call__(self, ctx: StepContext, data: Any) -> Any:
        self.entered += 1
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await self.open.wait()
        finally:
            self.active -= 1
        return data


async def test_start_returns_at_once_while_the_saga_runs() -> None:
    gate = Gate()
    coordinator, _ = make_coordinator()
    d = SagaDefinition("bg", steps=[step("wait", gate)])
    instance = await coordinator.start_saga(d, {"n": 1})
    assert instance.state is SagaState.RUNNING and instance.version == 1
    assert instance.data == {"n": 1} and instance.total_steps == 1
    await wait_until(lambda: gate.entered == 1)
    stored = await coordinator.get_saga_instance(instance.id)
    assert stored.state is SagaState.RUNNING and stored.lease_owner == coordinator.instance_id
    active = await coordinator.get_active_sagas(SagaFilter(definition_id="bg"))
    assert [s.id for s in active] == [instance.id]
    gate.open.set()
    final = await coordinator.wait_for_completion(instance.id, timeout=5)
    assert final.state is SagaState.COMPLETED and final.lease_owner is None
    assert final.end_time is not None and final.start_time is not None
    assert await coordinator.get_active_sagas(SagaFilter(definition_id="bg")) == []
    await coordinator.close()


async def test_explicit_saga_id_makes_start_idempotent() -> None:
    rec = Recorder()
    coordinator, _ = make_coordinator()
    d = SagaDefinition("idem", steps=[rec.step("a")])
    first, second = await asyncio.gather(
        coordinator.start_saga(d, [], saga_id="order-42"),
        coordinator.start_saga(d, [], saga_id="order-42"),
    )
    assert first.id == second.id == "order-42"
    await coordinator.wait_for_completion("order-42", timeout=5)
    again = await coordinator.start_saga(d, ["ignored"], saga_id="order-42")
    assert again.state is SagaState.COMPLETED
    assert rec.executed() == ["a"]  # ran once in total
    assert coordinator.get_metrics().total_sagas == 1
    await coordinator.close()


async def test_start_by_definition_id_and_unknown_ids() -> None:
    coordinator, _ = make_coordinator()
    coordinator.register(SagaDefinition("named", steps=[step("a", passthrough)]))
    final = await coordinator.wait_for_completion(
        (await coordinator.start_saga("named", 7)).id, timeout=5
    )
    assert final.result == 7
    with pytest.raises(SagaDefinitionError, match="nope"):
        await coordinator.start_saga("nope", 1)
    with pytest.raises(SagaNotFoundError):
        await coordinator.get_saga_instance("missing")
    with pytest.raises(SagaNotFoundError):
        await coordinator.wait_for_completion("missing", timeout=1)
    with pytest.raises(SagaNotFoundError):
        await coordinator.cancel_saga("missing")
    await coordinator.close()


async def test_wait_for_completion_times_out() -> None:
    gate = Gate()
    coordinator, _ = make_coordinator()
    instance = await coordinator.start_saga(SagaDefinition("w", steps=[step("a", gate)]), 1)
    with pytest.raises(TimeoutError):
        await coordinator.wait_for_completion(instance.id, timeout=0.05)
    gate.open.set()
    assert (await coordinator.wait_for_completion(instance.id, 5)).state is SagaState.COMPLETED
    await coordinator.close()


async def test_max_concurrent_sagas_saturates_with_a_clear_error() -> None:
    gate = Gate()
    config = ConcurrencyConfig(max_concurrent_sagas=3, worker_pool_size=10, acquire_timeout=0.05)
    coordinator, _ = make_coordinator(concurrency=config)
    d = SagaDefinition("sat", steps=[step("a", gate)])
    ids = [(await coordinator.start_saga(d, i)).id for i in range(3)]
    with pytest.raises(CoordinatorSaturatedError, match="3 saga slots"):
        await coordinator.start_saga(d, 99)
    assert coordinator.get_metrics().active_sagas == 3
    # a waiting start proceeds as soon as a slot frees up
    waiting = asyncio.create_task(
        make_start(coordinator, d, acquire_timeout_ok=True)
    )
    await asyncio.sleep(0.01)
    assert not waiting.done()
    gate.open.set()
    await asyncio.gather(*(coordinator.wait_for_completion(i, 5) for i in ids))
    late = await asyncio.wait_for(waiting, 5)
    assert (await coordinator.wait_for_completion(late, 5)).state is SagaState.COMPLETED
    await coordinator.close()


async def make_start(coordinator: Any, d: SagaDefinition, *, acquire_timeout_ok: bool) -> str:
    # acquire_timeout is 0.05 s: retry until a slot frees (what a caller would do)
    while True:
        try:
            return str((await coordinator.start_saga(d, 0)).id)
        except CoordinatorSaturatedError:
            assert acquire_timeout_ok
            await asyncio.sleep(0.005)


async def test_worker_pool_bounds_sagas_executing_steps() -> None:
    gate = Gate()
    config = ConcurrencyConfig(max_concurrent_sagas=50, worker_pool_size=4)
    coordinator, _ = make_coordinator(concurrency=config)
    d = SagaDefinition("pool", steps=[step("a", gate), step("b", gate)])
    ids = [(await coordinator.start_saga(d, i)).id for i in range(20)]
    await wait_until(lambda: gate.entered == 4)
    await asyncio.sleep(0.02)
    assert gate.active == 4  # the other 16 sagas wait for a worker
    gate.open.set()
    finals = await asyncio.gather(*(coordinator.wait_for_completion(i, 5) for i in ids))
    assert all(f.state is SagaState.COMPLETED for f in finals)
    assert gate.peak == 4 and gate.entered == 40
    await coordinator.close()


async def test_close_waits_for_running_sagas_then_refuses_new_ones() -> None:
    rec = Recorder()
    coordinator, _ = make_coordinator()
    d = SagaDefinition("close", steps=[rec.step("a"), rec.step("b")])
    ids = [(await coordinator.start_saga(d, [])).id for _ in range(10)]
    await coordinator.close()
    for saga_id in ids:
        assert (await coordinator.get_saga_instance(saga_id)).state is SagaState.COMPLETED
    with pytest.raises(CoordinatorClosedError):
        await coordinator.start_saga(d, [])
    assert not (await coordinator.health_check()).healthy


async def test_close_cancels_sagas_past_shutdown_timeout_and_frees_their_leases() -> None:
    gate = Gate()
    storage = MemoryStateStorage()
    config = ConcurrencyConfig(shutdown_timeout=0.05)
    coordinator, _ = make_coordinator(storage, concurrency=config)
    instance = await coordinator.start_saga(SagaDefinition("stuck", steps=[step("a", gate)]), 1)
    await wait_until(lambda: gate.entered == 1)
    await coordinator.close()
    assert gate.active == 0  # the step was cancelled
    stored = await storage.get_saga(instance.id)
    assert stored is not None and stored.state is SagaState.RUNNING  # left for recovery
    assert stored.lease_owner is None  # released: another coordinator may adopt it at once
    assert coordinator.get_metrics().active_sagas == 0


async def test_metrics_and_health() -> None:
    coordinator, _ = make_coordinator()
    ok = SagaDefinition("ok", steps=[step("a", passthrough), step("b", passthrough)])
    bad = SagaDefinition("bad", steps=[step("a", passthrough), step("b", declined)])
    ids = [(await coordinator.start_saga(ok, i)).id for i in range(3)]
    ids += [(await coordinator.start_saga(bad, i)).id for i in range(2)]
    for saga_id in ids:
        await coordinator.wait_for_completion(saga_id, 5)
    m = coordinator.get_metrics()
    assert (m.total_sagas, m.completed_sagas, m.compensated_sagas, m.failed_sagas) == (5, 3, 2, 0)
    assert m.active_sagas == 0 and m.average_saga_duration > 0
    assert m.steps_executed == 10 and m.compensations_run == 2
    assert m.events_published > 0 and m.event_publish_failures == 0
    health = await coordinator.health_check()
    assert health.healthy and health.storage_latency is not None
    await coordinator.close()


def test_concurrency_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="max_concurrent_sagas"):
        ConcurrencyConfig(max_concurrent_sagas=0)
    with pytest.raises(ConfigError, match="acquire_timeout"):
        ConcurrencyConfig(acquire_timeout=-1)


def test_invalid_coordinator_settings_raise_config_error_naming_the_field() -> None:
    from sagamesh.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        SagaCoordinator(MemoryStateStorage(), lease_ttl=0)
    assert info.value.field == "lease_ttl"
    with pytest.raises(ConfigError) as info:
        SagaCoordinator(MemoryStateStorage(), outbox=lambda event: [])  # type: ignore[arg-type]
    assert info.value.field == "outbox" and "MemoryStateStorage" in str(info.value)
