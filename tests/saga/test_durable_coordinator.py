"""The coordinator's recovery, leases and data rehydration on the durable stores (real Redis and
PostgreSQL on loopback, each test in its own key prefix / schema)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sagamesh.demo.order import OrderData, Services, order_saga, sample_order
from sagamesh.saga import SagaState, StateStorage
from sagamesh.saga.coordinator import SagaCoordinator

from .helpers import expire_lease, make_coordinator


@pytest.fixture(params=["redis", "postgres"])
async def durable(request: pytest.FixtureRequest, unique: str) -> AsyncIterator[StateStorage]:
    if request.param == "redis":
        from sagamesh.saga.storage.redis import RedisStateStorage

        redis = RedisStateStorage(request.getfixturevalue("redis_url"), prefix=f"t-saga-{unique}")
        try:
            yield redis
        finally:
            await redis.drop_prefix()
            await redis.close()
    else:
        from sagamesh.saga.storage.postgres import PostgresStateStorage

        dsn = request.getfixturevalue("postgres_dsn")
        pg = PostgresStateStorage(dsn, schema=f"t_saga_{unique}")
        try:
            yield pg
        finally:
            await pg.drop_schema()
            await pg.close()


class Hanging(Services):
    """Order services whose payment step blocks forever (the worker dies there)."""

    def __init__(self) -> None:
        super().__init__(payment_failure_rate=0.0, seed=1)
        self.blocked = 0
        self.all_blocked = asyncio.Event()
        self.expected = 0

    async def call(self, name: str) -> None:
        await super().call(name)
        if name == "payments.charge":
            self.blocked += 1
            if self.blocked == self.expected:
                self.all_blocked.set()
            await asyncio.Event().wait()


async def test_crashed_sagas_resume_elsewhere_with_typed_data(durable: StateStorage) -> None:
    import random

    dying = Hanging()
    dying.expected = 5
    a, _ = make_coordinator(durable, instance_id="A", lease_ttl=0.5)  # type: ignore[arg-type]
    rng = random.Random(3)
    orders = [sample_order(i, rng) for i in range(5)]
    ids = [(await a.start_saga(order_saga(dying), o)).id for o in orders]
    await asyncio.wait_for(dying.all_blocked.wait(), 10)
    await a.abandon()
    for saga_id in ids:
        stored = await durable.get_saga(saga_id)
        assert stored is not None and stored.current_step == 2 and stored.lease_owner == "A"
    await expire_lease(durable, ids[-1])  # type: ignore[arg-type]

    healthy = Services(payment_failure_rate=0.0, seed=1)
    b, _ = make_coordinator(durable, instance_id="B")  # type: ignore[arg-type]
    c, _ = make_coordinator(durable, instance_id="C")  # type: ignore[arg-type]
    for co in (b, c):
        co.register(order_saga(healthy))
    adopted = await asyncio.gather(b.recover(), c.recover())
    assert sum(adopted) == 5
    finals = [await _wait_any((b, c), i) for i in ids]
    assert all(f.state is SagaState.COMPLETED for f in finals)
    for order, final in zip(orders, finals, strict=True):
        assert isinstance(final.result, OrderData)  # rehydrated from JSON
        assert final.result.order_id == order.order_id and final.result.status == "confirmed"
        assert final.result.items == order.items
    # the survivors ran only payment and confirmation; each payment exactly once per key
    assert healthy.calls == {"payments.charge": 5, "orders.confirm": 5}
    assert sorted(healthy.payments) == sorted(f"{i}:process-payment" for i in ids)
    await asyncio.gather(b.close(), c.close())


async def _wait_any(coordinators: tuple[SagaCoordinator, ...], saga_id: str) -> Any:
    return await coordinators[0].wait_for_completion(saga_id, timeout=15)


async def test_compensation_after_restart_gets_typed_step_outputs(durable: StateStorage) -> None:
    import random

    dying = Hanging()
    dying.expected = 1
    a, _ = make_coordinator(durable, instance_id="A", lease_ttl=0.5)  # type: ignore[arg-type]
    order = sample_order(7, random.Random(7))
    instance = await a.start_saga(order_saga(dying), order)
    await asyncio.wait_for(dying.all_blocked.wait(), 10)
    await a.abandon()
    await expire_lease(durable, instance.id)  # type: ignore[arg-type]

    released: list[Any] = []
    declining = Services(payment_failure_rate=1.0, seed=1)
    definition = order_saga(declining)
    inventory = definition.steps[1]
    original = inventory.compensate

    async def spy(ctx: Any, data: Any) -> None:
        released.append(data)
        await original(ctx, data)

    inventory.compensate = spy  # type: ignore[method-assign]
    b, _ = make_coordinator(durable, instance_id="B")  # type: ignore[arg-type]
    b.register(definition)
    assert await b.recover() == 1
    final = await b.wait_for_completion(instance.id, timeout=15)
    assert final.state is SagaState.COMPENSATED
    assert final.error is not None and final.error.code == "payment_declined"
    assert len(released) == 1 and isinstance(released[0], OrderData)
    assert released[0].reservation_id == f"res-{order.order_id}"
    steps = await durable.get_step_states(instance.id)
    assert [s.status.value for s in steps] == ["compensated", "compensated", "failed"]
    await b.close()


async def test_outbox_mode_writes_events_with_the_state(redis_url: str, unique: str) -> None:
    import msgspec

    from sagamesh.message import Message
    from sagamesh.saga.outbox import event_messages
    from sagamesh.saga.storage.redis import RedisStateStorage
    from sagamesh.serialization import get_serializer

    storage = RedisStateStorage(redis_url, prefix=f"t-outbox-{unique}")
    try:
        coordinator, publisher = make_coordinator(storage, outbox=event_messages())  # type: ignore[arg-type]
        services = Services(payment_failure_rate=0.0, seed=1)
        import random

        instance = await coordinator.start_saga(
            order_saga(services), sample_order(1, random.Random(1))
        )
        final = await coordinator.wait_for_completion(instance.id, timeout=10)
        assert final.state is SagaState.COMPLETED
        assert len(publisher.history) == 0  # nothing published directly: the relay does that
        entries: Any = await storage.client.xrange(storage.outbox_stream)
        messages = [msgspec.json.decode(fields[b"m"], type=Message) for _, fields in entries]
        json = get_serializer("json")
        types = [json.decode(m.body).type.value for m in messages]
        assert types == ["saga.started"] + ["saga.step.started", "saga.step.completed"] * 4 + [
            "saga.completed"
        ]
        assert {m.key for m in messages} == {instance.id}
        assert {m.topic for m in messages} == {"saga.events"}
        assert all(m.headers["sagamesh-saga-id"] == instance.id for m in messages)
        assert coordinator.get_metrics().events_published == 10
        await coordinator.close()
    finally:
        await storage.drop_prefix()
        await storage.close()
