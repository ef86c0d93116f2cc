"""Crash recovery with leases and version fencing (MemoryStateStorage and a JSON-only store)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sagamesh.saga import (
    OUTCOME_KEY,
    ConcurrencyConfig,
    MemoryStateStorage,
    SagaDefinition,
    SagaInstance,
    SagaState,
    StepContext,
    StepState,
    StepStatus,
    step,
)

from .helpers import JsonMemoryStorage, expire_lease, make_coordinator, wait_until


@dataclass
class Order:
    order_id: str
    steps: list[str] = field(default_factory=list)


class Services:
    """Example services that dedupe on the idempotency key and record concurrency."""

    def __init__(self, hang: set[str] | None = None, hang_comp: set[str] | None = None) -> None:
        self.effects: dict[str, Any] = {}  # idempotency key -> output (the "database")
        self.calls: list[tuple[str, str, str]] = []  # (phase, step, key)
        self.comp_inputs: list[tuple[str, Any]] = []
        self.hang = hang or set()
        self.hang_comp = hang_comp or set()
        self.entered = asyncio.Event()
        self.active: dict[str, int] = {}
        self.peak = 0

    def step(self, step_id: str, *, fail: bool = False) -> Any:
        async def execute(ctx: StepContext, data: Order) -> Order:
            key = ctx.idempotency_key
            self.calls.append(("exec", step_id, key))
            self.active[key] = self.active.get(key, 0) + 1
            self.peak = max(self.peak, self.active[key])
            try:
                await asyncio.sleep(0.002)
                if step_id in self.hang:
                    self.entered.set()
                    await asyncio.Event().wait()  # until the coordinator dies
                if fail:
                    from sagamesh.errors import BusinessError

                    raise BusinessError("declined", "payment declined")
                if key not in self.effects:  # dedupe: a re-run returns the recorded effect
                    self.effects[key] = Order(data.order_id, [*data.steps, step_id])
                return self.effects[key]  # type: ignore[no-any-return]
            finally:
                self.active[key] -= 1

        async def compensate(ctx: StepContext, data: Order) -> None:
            self.calls.append(("comp", step_id, ctx.idempotency_key))
            self.comp_inputs.append((step_id, data))
            if step_id in self.hang_comp:
                self.entered.set()
                await asyncio.Event().wait()
            self.effects.pop(ctx.idempotency_key, None)

        return step(step_id, execute, compensate)

    def definition(self, *, fail_last: bool = False, timeout: float | None = None) -> Any:
        return SagaDefinition(
            "order",
            steps=[self.step("a"), self.step("b"), self.step("c", fail=fail_last)],
            data_type=Order,
            timeout=timeout,
        )


async def test_crash_mid_step_resumes_that_step_with_the_same_key() -> None:
    storage = MemoryStateStorage()
    before = Services(hang={"b"})
    a, _ = make_coordinator(storage, instance_id="A", lease_ttl=0.3)
    instance = await a.start_saga(before.definition(), Order("o-1"))
    await asyncio.wait_for(before.entered.wait(), 5)
    await a.abandon()  # the process "dies" inside step b

    after = Services()
    b, _ = make_coordinator(storage, instance_id="B", lease_ttl=5)
    b.register(after.definition())
    assert await b.recover() == 0  # A's lease is still live
    await expire_lease(storage, instance.id)
    assert await b.recover() == 1
    final = await b.wait_for_completion(instance.id, timeout=5)
    assert final.state is SagaState.COMPLETED
    assert final.result == Order("o-1", ["a", "b", "c"])
    assert [c[1] for c in after.calls] == ["b", "c"]  # a is not re-run
    b_key_before = [k for phase, s, k in before.calls if s == "b"]
    b_key_after = [k for phase, s, k in after.calls if s == "b"]
    assert b_key_before == b_key_after == [f"{instance.id}:b"]
    assert b.get_metrics().recovered_sagas == 1
    await b.close()


async def test_recover_runs_on_start() -> None:
    storage = MemoryStateStorage()
    before = Services(hang={"a"})
    a, _ = make_coordinator(storage, instance_id="A", lease_ttl=0.2)
    instance = await a.start_saga(before.definition(), Order("o-2"))
    await asyncio.wait_for(before.entered.wait(), 5)
    await a.abandon()
    await expire_lease(storage, instance.id)
    after = Services()
    b, _ = make_coordinator(storage, instance_id="B", definitions=[after.definition()])
    async with b:  # start() recovers
        final = await b.wait_for_completion(instance.id, timeout=5)
    assert final.state is SagaState.COMPLETED


async def test_crash_during_compensation_continues_it_with_each_steps_output() -> None:
    storage = JsonMemoryStorage()  # JSON only: outputs must come back as Order instances
    before = Services(hang_comp={"b"})
    a, _ = make_coordinator(storage, instance_id="A", lease_ttl=0.3)
    instance = await a.start_saga(before.definition(fail_last=True), Order("o-3"))
    await asyncio.wait_for(before.entered.wait(), 5)
    await a.abandon()
    stored = await storage.get_saga(instance.id)
    assert stored is not None and stored.state is SagaState.COMPENSATING

    after = Services()
    b, _ = make_coordinator(storage, instance_id="B")
    b.register(after.definition(fail_last=True))
    await expire_lease(storage, instance.id)
    assert await b.recover() == 1
    final = await b.wait_for_completion(instance.id, timeout=5)
    assert final.state is SagaState.COMPENSATED
    assert after.comp_inputs == [("b", Order("o-3", ["a", "b"])), ("a", Order("o-3", ["a"]))]
    assert all(isinstance(d, Order) for _, d in after.comp_inputs)
    assert final.error is not None and final.error.code == "declined"
    statuses = [s.status for s in await storage.get_step_states(instance.id)]
    assert statuses == [StepStatus.COMPENSATED, StepStatus.COMPENSATED, StepStatus.FAILED]
    await b.close()


async def test_step_completed_just_before_the_crash_is_not_rerun() -> None:
    storage = JsonMemoryStorage()
    now = datetime.now(UTC)
    saga = SagaInstance(
        id="crafted", definition_id="order", state=SagaState.RUNNING, current_step=1,
        completed_steps=1, total_steps=3, data={"order_id": "o-4", "steps": ["a"]},
        start_time=now, created_at=now, updated_at=now,
    )
    await storage.save_saga(saga)
    for index, done in enumerate([["a"], ["a", "b"]]):
        await storage.save_step_state(
            StepState("crafted", "ab"[index], index, StepStatus.COMPLETED, 1,
                      output={"order_id": "o-4", "steps": done})
        )
    services = Services()
    b, _ = make_coordinator(storage, instance_id="B", definitions=[services.definition()])
    assert await b.recover() == 1
    final = await b.wait_for_completion("crafted", timeout=5)
    assert final.state is SagaState.COMPLETED
    assert [c[1] for c in services.calls] == ["c"]
    assert final.result == Order("o-4", ["a", "b", "c"])
    await b.close()


async def test_timed_out_saga_found_in_storage_is_compensated_and_timed_out() -> None:
    storage = JsonMemoryStorage()
    past = datetime.now(UTC) - timedelta(minutes=5)
    saga = SagaInstance(
        id="late", definition_id="order", state=SagaState.RUNNING, current_step=1,
        completed_steps=1, total_steps=3, data={"order_id": "o-5", "steps": ["a"]},
        start_time=past, created_at=past, updated_at=past, timeout_at=past + timedelta(seconds=1),
    )
    await storage.save_saga(saga)
    await storage.save_step_state(
        StepState(
            "late", "a", 0, StepStatus.COMPLETED, 1, output={"order_id": "o-5", "steps": ["a"]}
        )
    )
    services = Services()
    b, publisher = make_coordinator(storage, definitions=[services.definition(timeout=60)])
    assert await b.recover() == 1
    final = await b.wait_for_completion("late", timeout=5)
    assert final.state is SagaState.TIMED_OUT
    assert services.calls == [("comp", "a", "late:a")]
    assert [e.type.value for e in publisher.history][-1] == "saga.timed_out"
    await b.close()


async def test_compensating_saga_keeps_its_intended_outcome() -> None:
    storage = MemoryStateStorage()
    now = datetime.now(UTC)
    order = Order("o-6", ["a"])
    saga = SagaInstance(
        id="cxl", definition_id="order", state=SagaState.COMPENSATING, current_step=1,
        completed_steps=1, total_steps=3, data=order, start_time=now, created_at=now,
        updated_at=now, metadata={OUTCOME_KEY: "cancelled"},
    )
    await storage.save_saga(saga)
    await storage.save_step_state(StepState("cxl", "a", 0, StepStatus.COMPLETED, 1, output=order))
    services = Services()
    b, _ = make_coordinator(storage, definitions=[services.definition()])
    await b.recover()
    assert (await b.wait_for_completion("cxl", timeout=5)).state is SagaState.CANCELLED
    assert services.comp_inputs == [("a", order)]
    await b.close()


async def test_two_coordinators_recovering_at_once_never_run_a_step_twice_concurrently() -> None:
    storage = MemoryStateStorage()
    before = Services(hang={"b"})
    a, _ = make_coordinator(storage, instance_id="A", lease_ttl=0.3)
    d = before.definition()
    ids = [(await a.start_saga(d, Order(f"o-{i}"))).id for i in range(20)]
    await wait_until(lambda: sum(1 for c in before.calls if c[1] == "b") == 20)
    await a.abandon()
    await expire_lease(storage, ids[-1])

    after = Services()  # shared "database" of both new workers
    b, _ = make_coordinator(storage, instance_id="B", definitions=[after.definition()])
    c, _ = make_coordinator(storage, instance_id="C", definitions=[after.definition()])
    adopted = await asyncio.gather(b.recover(), c.recover())
    assert sum(adopted) == 20
    finals = await asyncio.gather(
        *(b.wait_for_completion(i, timeout=10) for i in ids),
    )
    assert all(f.state is SagaState.COMPLETED for f in finals)
    assert after.peak == 1  # no idempotency key ever ran twice at the same time
    runs = [k for phase, s, k in after.calls if phase == "exec"]
    assert sorted(runs) == sorted(f"{i}:{s}" for i in ids for s in "bc")  # each exactly once
    await asyncio.gather(b.close(), c.close())


async def test_a_coordinator_that_lost_its_lease_stops_at_its_next_write() -> None:
    storage = MemoryStateStorage()
    release = asyncio.Event()
    ran: list[tuple[str, str]] = []

    def make(owner: str) -> SagaDefinition:
        async def slow(ctx: StepContext, data: Any) -> Any:
            ran.append((owner, ctx.step_id))
            if owner == "A":
                await release.wait()
            return data

        async def fast(ctx: StepContext, data: Any) -> Any:
            ran.append((owner, ctx.step_id))
            return data

        return SagaDefinition("fence", steps=[step("one", slow), step("two", fast)])

    a, _ = make_coordinator(storage, instance_id="A")
    instance = await a.start_saga(make("A"), 1)
    await wait_until(lambda: ("A", "one") in ran)
    # A stalls past its lease (e.g. a long GC pause); B adopts the saga
    storage._sagas[instance.id].lease_expires_at = datetime.now(UTC) - timedelta(seconds=1)
    b, _ = make_coordinator(storage, instance_id="B", definitions=[make("B")])
    assert await b.recover() == 1
    final = await b.wait_for_completion(instance.id, timeout=5)
    assert final.state is SagaState.COMPLETED
    release.set()  # A wakes up and tries to record step "one"
    await wait_until(lambda: a.get_metrics().lost_leases == 1)
    await wait_until(lambda: a.get_metrics().active_sagas == 0)
    assert ("A", "two") not in ran  # fenced: A never drove the saga further
    stored = await storage.get_saga(instance.id)
    assert stored is not None and stored.state is SagaState.COMPLETED
    assert stored.version == final.version
    await asyncio.gather(a.close(), b.close())


class FlakyLeases(MemoryStateStorage):
    """Storage whose lease renewals fail for one owner (a partition between it and the store)."""

    def __init__(self, broken_owner: str) -> None:
        super().__init__()
        self.broken_owner = broken_owner

    async def acquire_lease(self, saga_id: str, owner: str, ttl: float) -> SagaInstance | None:
        if owner == self.broken_owner:
            raise ConnectionError("storage unreachable")
        return await super().acquire_lease(saga_id, owner, ttl)


async def test_renewal_failures_cancel_the_saga_before_the_lease_expires() -> None:
    storage = FlakyLeases("A")
    cancelled = asyncio.Event()

    async def long(ctx: StepContext, data: Any) -> Any:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    a, _ = make_coordinator(storage, instance_id="A", lease_ttl=1.0)
    instance = await a.start_saga(SagaDefinition("renew", steps=[step("long", long)]), 1)
    await asyncio.wait_for(cancelled.wait(), 5)
    stopped_at = datetime.now(UTC)
    stored = await storage.get_saga(instance.id)
    assert stored is not None and stored.lease_expires_at is not None
    assert stopped_at < stored.lease_expires_at  # A let go before anyone could adopt it
    assert a.get_metrics().lost_leases == 1
    await a.close()


async def test_leases_are_renewed_while_a_long_step_runs() -> None:
    storage = MemoryStateStorage()
    release = asyncio.Event()

    async def long(ctx: StepContext, data: Any) -> Any:
        await release.wait()
        return data

    a, _ = make_coordinator(storage, instance_id="A", lease_ttl=0.6)
    instance = await a.start_saga(SagaDefinition("renewed", steps=[step("long", long)]), 1)
    first = await storage.get_saga(instance.id)
    assert first is not None and first.lease_expires_at is not None
    await asyncio.sleep(1.5)  # two and a half TTLs: only renewals keep the lease alive
    b, _ = make_coordinator(storage, instance_id="B")
    b.register(SagaDefinition("renewed", steps=[step("long", long)]))
    assert await b.recover() == 0  # still A's
    now = await storage.get_saga(instance.id)
    assert now is not None and now.lease_owner == "A"
    assert now.lease_expires_at is not None and now.lease_expires_at > first.lease_expires_at
    release.set()
    assert (await a.wait_for_completion(instance.id, 5)).state is SagaState.COMPLETED
    await asyncio.gather(a.close(), b.close())


async def test_cancel_adopts_an_orphaned_saga_but_not_a_live_one() -> None:
    import pytest

    from sagamesh.errors import LeaseError

    storage = MemoryStateStorage()
    before = Services(hang={"b"})
    a, _ = make_coordinator(storage, instance_id="A", lease_ttl=0.3)
    instance = await a.start_saga(before.definition(), Order("o-9"))
    await asyncio.wait_for(before.entered.wait(), 5)

    after = Services()
    b, publisher = make_coordinator(storage, instance_id="B", recovery_interval=None)
    b.register(after.definition())
    with pytest.raises(LeaseError, match="driven by A"):
        await b.cancel_saga(instance.id, "ops")  # A is alive and holds the lease
    await a.abandon()
    await expire_lease(storage, instance.id)
    await b.cancel_saga(instance.id, "ops")  # A is gone: B adopts and cancels
    final = await b.wait_for_completion(instance.id, timeout=5)
    assert final.state is SagaState.CANCELLED and final.error is not None
    assert final.error.message == "ops"
    assert after.calls == [("comp", "a", f"{instance.id}:a")]  # only the completed step undone
    assert [e.type.value for e in publisher.history][-1] == "saga.cancelled"
    await b.close()


async def test_recovery_adopts_many_sagas_once_each() -> None:
    storage = MemoryStateStorage()
    before = Services(hang={"a"})
    wide = ConcurrencyConfig(max_concurrent_sagas=200, worker_pool_size=200)
    a, _ = make_coordinator(storage, instance_id="A", lease_ttl=0.2, concurrency=wide)
    d = before.definition()
    ids = [(await a.start_saga(d, Order(f"o-{i}"))).id for i in range(100)]
    await wait_until(lambda: len(before.calls) == 100)
    await a.abandon()
    await expire_lease(storage, ids[-1])
    after = Services()
    b, _ = make_coordinator(
        storage, instance_id="B", definitions=[after.definition()], concurrency=wide
    )
    adopted = await asyncio.gather(b.recover(), b.recover(), b.recover())
    assert sum(adopted) == 100
    for saga_id in ids:
        assert (await b.wait_for_completion(saga_id, 10)).state is SagaState.COMPLETED
    assert len(after.calls) == 300 and after.peak == 1
    assert b.get_metrics().recovered_sagas == 100
    await b.close()


class SlowStepWrites(MemoryStateStorage):
    """Storage whose step records take ``delay`` to write (a slow or distant database)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def save_step_state(self, state: StepState) -> None:
        await asyncio.sleep(self.delay)
        await super().save_step_state(state)


def _lease_left(storage: MemoryStateStorage, saga_id: str) -> float:
    stored = storage._sagas[saga_id]
    assert stored.lease_expires_at is not None
    return (stored.lease_expires_at - datetime.now(UTC)).total_seconds()


async def test_a_slow_write_does_not_shorten_the_lease_a_step_runs_on() -> None:
    """The lease a write extends runs from the write, not from when the previous step ended:
    otherwise a step started after a slow write has almost no lease left, another coordinator
    adopts the saga and runs the same step at the same time."""
    ttl = 0.5
    storage = SlowStepWrites(delay=0.3)
    spans: list[tuple[str, float, float]] = []
    left: list[float] = []

    def make(owner: str) -> SagaDefinition:
        async def quick(ctx: StepContext, data: Any) -> Any:
            return data

        async def slow(ctx: StepContext, data: Any) -> Any:
            left.append(_lease_left(storage, ctx.saga_id))
            began = asyncio.get_running_loop().time()
            try:
                await asyncio.sleep(0.25)
            finally:
                spans.append((owner, began, asyncio.get_running_loop().time()))
            return data

        return SagaDefinition("slow-writes", steps=[step("one", quick), step("two", slow)])

    a, _ = make_coordinator(storage, instance_id="A", lease_ttl=ttl)
    b, _ = make_coordinator(storage, instance_id="B", lease_ttl=ttl, definitions=[make("B")])
    instance = await a.start_saga(make("A"), 1)

    async def contend() -> None:  # B adopts the moment A's lease runs out
        while True:
            await b.recover()
            await asyncio.sleep(0.005)

    contender = asyncio.create_task(contend())
    try:
        final = await a.wait_for_completion(instance.id, timeout=5)
    finally:
        contender.cancel()
    assert final is not None and final.state is SagaState.COMPLETED
    assert [owner for owner, _, _ in spans] == ["A"]  # nobody else ran step two
    assert left and left[0] > ttl * 0.8  # it started on a whole lease, not what the write left
    assert a.get_metrics().lost_leases == 0
    await asyncio.gather(a.close(), b.close())


async def _run_alone(storage: MemoryStateStorage, definition: SagaDefinition,
                    ttl: float) -> SagaInstance:
    a, _ = make_coordinator(storage, instance_id="A", lease_ttl=ttl)
    instance = await a.start_saga(definition, 1)
    final = await a.wait_for_completion(instance.id, timeout=5)
    await a.close()
    assert final is not None
    return final


async def test_an_attempt_never_starts_on_a_lease_about_to_run_out() -> None:
    """A step that blocked the event loop (so the lease keeper could not run) and failed is
    retried only after the lease is renewed: every attempt starts with at least half a TTL."""
    import time

    from sagamesh.errors import RetryableError
    from sagamesh.retry import FixedDelayRetryPolicy

    ttl = 0.5
    storage = MemoryStateStorage()
    left: list[float] = []

    async def blocking(ctx: StepContext, data: Any) -> Any:
        left.append(_lease_left(storage, ctx.saga_id))
        if ctx.attempt == 1:
            time.sleep(ttl * 0.8)  # noqa: ASYNC251 - the point: nothing else runs meanwhile
            raise RetryableError("flaky after a long blocking call")
        return data

    definition = SagaDefinition(
        "blocked",
        steps=[step("pay", blocking)],
        retry_policy=FixedDelayRetryPolicy(max_attempts=2, delay=0.0),
    )
    assert (await _run_alone(storage, definition, ttl)).state is SagaState.COMPLETED
    assert len(left) == 2
    assert left[1] >= ttl / 2, left  # renewed before the retry, not ttl * 0.2 as left over


async def test_a_compensation_never_starts_on_a_lease_about_to_run_out() -> None:
    import time

    from sagamesh.errors import BusinessError, RetryableError
    from sagamesh.retry import FixedDelayRetryPolicy

    ttl = 0.5
    storage = MemoryStateStorage()
    left: list[float] = []

    async def book(ctx: StepContext, data: Any) -> Any:
        return data

    async def unbook(ctx: StepContext, data: Any) -> None:
        left.append(_lease_left(storage, ctx.saga_id))
        if ctx.attempt == 1:
            time.sleep(ttl * 0.8)  # noqa: ASYNC251 - blocks the lease keeper too
            raise RetryableError("flaky after a long blocking call")

    async def pay(ctx: StepContext, data: Any) -> Any:
        raise BusinessError("declined", "card declined")

    definition = SagaDefinition(
        "declined",
        steps=[step("book", book, unbook), step("pay", pay)],
        retry_policy=FixedDelayRetryPolicy(max_attempts=2, delay=0.0),
    )
    assert (await _run_alone(storage, definition, ttl)).state is SagaState.COMPENSATED
    assert len(left) == 2
    assert left[1] >= ttl / 2, left  # renewed before the second attempt
