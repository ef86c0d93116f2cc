"""Every transition publishes the matching SagaEvent, with its fields filled."""

from __future__ import annotations

from typing import Any

from sagamesh.consuming.filters import EventTypeFilter
from sagamesh.events import EventType, SagaEvent
from sagamesh.retry import FixedDelayRetryPolicy
from sagamesh.saga import (
    InMemoryEventPublisher,
    MemoryStateStorage,
    SagaCoordinator,
    SagaDefinition,
    SagaState,
)

from .helpers import Recorder, business, events_of, make_coordinator, sequence


async def test_success_sequence_and_fields() -> None:
    rec = Recorder()
    coordinator, publisher = make_coordinator()
    d = SagaDefinition("ok", steps=[rec.step("a"), rec.step("b")])
    instance = await coordinator.start_saga(d, [], metadata={"tenant": "acme"}, trace_id="t-1")
    await coordinator.wait_for_completion(instance.id, timeout=5)
    assert sequence(publisher, instance.id) == [
        ("saga.started", ""),
        ("saga.step.started", "a"),
        ("saga.step.completed", "a"),
        ("saga.step.started", "b"),
        ("saga.step.completed", "b"),
        ("saga.completed", ""),
    ]
    events = events_of(publisher, instance.id)
    started, *_, done = events
    assert (started.previous_state, started.new_state, started.data) == ("pending", "running", [])
    assert (done.previous_state, done.new_state, done.data) == ("running", "completed", ["a", "b"])
    assert done.duration.total_seconds() > 0
    step_done = events[2]
    assert step_done.attempt == 1 and step_done.max_attempts == 1
    assert step_done.data == ["a"] and step_done.duration.total_seconds() > 0
    assert all(e.trace_id == "t-1" and e.metadata["definition_id"] == "ok" for e in events)
    assert all(e.correlation_id == instance.id and e.source == "sagamesh.saga" for e in events)
    assert len({e.id for e in events}) == len(events)
    timestamps = [e.timestamp for e in events]
    assert timestamps == sorted(timestamps) and timestamps[0].tzinfo is not None
    records = await coordinator.get_step_states(instance.id)
    began = {e.step_id: e.timestamp for e in events if e.type is EventType.SAGA_STEP_STARTED}
    finished = {e.step_id: e.timestamp for e in events if e.type is EventType.SAGA_STEP_COMPLETED}
    assert {r.step_id: r.started_at for r in records} == began  # one clock for both
    assert {r.step_id: r.completed_at for r in records} == finished
    await coordinator.close()


async def test_failure_sequence_with_retries_and_compensation() -> None:
    rec = Recorder()
    coordinator, publisher = make_coordinator()
    d = SagaDefinition(
        "fail",
        steps=[rec.step("a"), rec.step("b", fail=lambda n: ConnectionError("x"))],
        retry_policy=FixedDelayRetryPolicy(2, 0.001),
    )
    instance = await coordinator.start_saga(d, [])
    await coordinator.wait_for_completion(instance.id, timeout=5)
    assert sequence(publisher, instance.id) == [
        ("saga.started", ""),
        ("saga.step.started", "a"),
        ("saga.step.completed", "a"),
        ("saga.step.started", "b"),
        ("saga.step.failed", "b"),
        ("retry.attempted", "b"),
        ("saga.step.started", "b"),
        ("saga.step.failed", "b"),
        ("retry.exhausted", "b"),
        ("compensation.started", ""),
        ("compensation.step.started", "a"),
        ("compensation.step.completed", "a"),
        ("compensation.completed", ""),
        ("saga.failed", ""),
    ]
    events = events_of(publisher, instance.id)
    comp_started = events[9]
    assert (comp_started.previous_state, comp_started.new_state) == ("running", "compensating")
    assert comp_started.error is not None and comp_started.error.code == "ConnectionError"
    assert (events[-2].previous_state, events[-2].new_state) == ("compensating", "compensated")
    assert (events[-1].new_state, events[-1].error is not None) == ("compensated", True)
    assert [e.attempt for e in events if e.step_id == "b"] == [1, 1, 2, 2, 2, 2]
    await coordinator.close()


async def test_subscribe_filters_and_unsubscribe() -> None:
    publisher = InMemoryEventPublisher()
    got_all: list[SagaEvent] = []
    got_done: list[SagaEvent] = []
    got_pred: list[str] = []

    async def on_done(event: SagaEvent) -> None:
        got_done.append(event)

    sub_all = publisher.subscribe(None, got_all.append)
    publisher.subscribe([EventType.SAGA_COMPLETED, EventType.SAGA_FAILED], on_done)
    publisher.subscribe(lambda e: e.step_id == "b", lambda e: got_pred.append(e.type.value))
    def explode(event: SagaEvent) -> None:
        raise RuntimeError("handler bug")

    publisher.subscribe(EventTypeFilter(EventType.SAGA_STARTED), explode)
    coordinator = SagaCoordinator(MemoryStateStorage(), publisher)
    rec = Recorder()
    d = SagaDefinition("subs", steps=[rec.step("a"), rec.step("b")])
    for _ in range(2):
        await coordinator.wait_for_completion((await coordinator.start_saga(d, [])).id, 5)
    assert len(got_all) == 12 and [e.type for e in got_done] == [EventType.SAGA_COMPLETED] * 2
    assert got_pred == ["saga.step.started", "saga.step.completed"] * 2
    assert publisher.handler_errors == 2  # logged and counted, sagas unaffected
    assert publisher.unsubscribe(sub_all) and not publisher.unsubscribe(sub_all)
    await coordinator.wait_for_completion((await coordinator.start_saga(d, [])).id, 5)
    assert len(got_all) == 12 and len(got_done) == 3
    assert publisher.published_count == 18
    await coordinator.close()


class BrokenSink:
    """Only ``publish_saga_event`` (the minimal protocol), and it fails half the time."""

    def __init__(self) -> None:
        self.seen: list[SagaEvent] = []

    async def publish_saga_event(self, event: SagaEvent) -> None:
        self.seen.append(event)
        if len(self.seen) % 2 == 0:
            raise ConnectionError("broker down")


async def test_publisher_failures_never_break_a_saga() -> None:
    sink = BrokenSink()
    coordinator = SagaCoordinator(MemoryStateStorage(), sink)
    rec = Recorder()
    d = SagaDefinition("sink", steps=[rec.step("a"), rec.step("b", fail=business)])
    final = await coordinator.wait_for_completion((await coordinator.start_saga(d, [])).id, 5)
    assert final.state is SagaState.COMPENSATED
    m = coordinator.get_metrics()
    assert m.event_publish_failures > 0
    assert len(sink.seen) == 10  # every event was attempted, failures did not drop others
    assert (m.events_published, m.event_publish_failures) == (5, 5)
    await coordinator.close()


async def test_events_go_through_a_broker_publisher_when_available() -> None:
    from sagamesh.brokers.memory import MemoryBroker
    from sagamesh.publishing import PublisherConfig, SagaEventPublisher

    received: list[Any] = []
    broker = MemoryBroker()
    async with broker:

        async def handler(delivery: Any) -> None:
            received.append(delivery.message)
            await delivery.ack()

        await broker.subscribe("saga.events", handler, group="test")
        publisher = SagaEventPublisher(broker, PublisherConfig())
        coordinator = SagaCoordinator(MemoryStateStorage(), publisher)
        rec = Recorder()
        d = SagaDefinition("broker", steps=[rec.step("a")])
        instance = await coordinator.start_saga(d, [])
        await coordinator.wait_for_completion(instance.id, 5)
        await coordinator.close()
        await publisher.close()
        from .helpers import wait_until

        await wait_until(lambda: len(received) == 4)
        assert {m.key for m in received} == {instance.id}
        assert [m.headers["sagamesh-event-type"] for m in received] == [
            "saga.started", "saga.step.started", "saga.step.completed", "saga.completed"
        ]
