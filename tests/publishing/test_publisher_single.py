"""Single publish: wire form, topic strategies, bad input, metrics and close semantics."""

from __future__ import annotations

import asyncio

import pytest

from sagamesh.brokers.memory import MemoryBroker
from sagamesh.errors import (
    InvalidEventError,
    PublisherClosedError,
    SerializationError,
    TransactionError,
)
from sagamesh.events import EventType, SagaEvent
from sagamesh.message import Headers
from sagamesh.publishing import Publication, PublisherConfig, SagaEventPublisher
from sagamesh.publishing.stage import CallNext
from sagamesh.serialization import from_message
from sagamesh.testing.faults import FaultyBroker

from .conftest import FakeTime, collect, make_event


async def test_publish_sends_one_keyed_message_with_the_four_headers(broker: MemoryBroker) -> None:
    seen = await collect(broker, "saga.events")
    publisher = SagaEventPublisher(broker)
    event = make_event(saga_id="order-7", type=EventType.SAGA_STARTED)
    await publisher.publish_saga_event(event)
    [message] = await seen.wait_for(1)
    assert message.id == event.id and message.key == "order-7"
    assert message.topic == "saga.events"
    assert message.headers[Headers.CONTENT_TYPE] == "application/json"
    assert message.headers[Headers.EVENT_ID] == event.id
    assert message.headers[Headers.EVENT_TYPE] == "saga.started"
    assert message.headers[Headers.SAGA_ID] == "order-7"
    assert from_message(message) == event
    assert broker.published == 1
    await publisher.close()


async def test_per_type_strategy_publishes_to_prefix_dot_type(broker: MemoryBroker) -> None:
    publisher = SagaEventPublisher(broker, PublisherConfig(topic_prefix="orders",
                                                           topic_strategy="per_type"))
    await publisher.publish_saga_event(make_event(type=EventType.SAGA_STARTED))
    await publisher.publish_saga_event(make_event(type=EventType.COMPENSATION_COMPLETED))
    await publisher.publish_saga_event(make_event(type=EventType.SAGA_STARTED))
    assert broker.topics() == ["orders.compensation.completed", "orders.saga.started"]
    assert publisher.topic_for(make_event(type=EventType.DEAD_LETTERED)) == "orders.dead.lettered"
    assert [len(broker._topics[t].log) for t in broker.topics()] == [1, 2]


async def test_single_strategy_sends_every_type_to_one_topic(broker: MemoryBroker) -> None:
    publisher = SagaEventPublisher(broker, PublisherConfig(topic_prefix="all.sagas"))
    for kind in (EventType.SAGA_STARTED, EventType.SAGA_FAILED, EventType.RETRY_ATTEMPTED):
        await publisher.publish_saga_event(make_event(type=kind))
    assert broker.topics() == ["all.sagas"]
    assert len(broker._topics["all.sagas"].log) == 3


@pytest.mark.parametrize("missing", ["id", "saga_id", "type"])
async def test_event_missing_a_required_field_is_refused_and_not_retried(
        missing: str, fake_time: FakeTime) -> None:
    inner = MemoryBroker()
    async with FaultyBroker(inner) as broker:
        publisher = SagaEventPublisher(broker, sleep=fake_time.sleep, clock=fake_time.clock)
        event = make_event().replace(**{missing: ""})
        with pytest.raises(InvalidEventError, match=missing):
            await publisher.publish_saga_event(event)
        assert broker.attempts == 0 and fake_time.sleeps == []
        assert publisher.get_metrics().failed_count == 1
        assert publisher.get_reliability_metrics().total_retries == 0


async def test_non_event_and_unencodable_event_raise_typed_errors(broker: MemoryBroker) -> None:
    publisher = SagaEventPublisher(broker)
    with pytest.raises(InvalidEventError):
        await publisher.publish_saga_event({"saga_id": "x"})  # type: ignore[arg-type]
    unencodable = make_event().replace(data={"when": object()})
    with pytest.raises(SerializationError):
        await publisher.publish_saga_event(unencodable)
    assert broker.published == 0


async def test_metrics_count_latency_and_rate(broker: MemoryBroker, fake_time: FakeTime) -> None:
    async def ten_ms_broker(pub: Publication, call_next: CallNext) -> None:
        fake_time.now += 0.010 * len(pub.messages)  # deterministic "broker latency"
        await call_next(pub)

    publisher = SagaEventPublisher(broker, PublisherConfig(stages=[ten_ms_broker]),
                                   sleep=fake_time.sleep, clock=fake_time.clock)
    for _ in range(4):
        await publisher.publish_saga_event(make_event())
    await publisher.publish_batch([make_event() for _ in range(6)])
    await publisher.publish_batch([make_event() for _ in range(2)])
    fake_time.now += 1.0
    metrics = publisher.get_metrics()
    assert metrics.published_count == 12 and metrics.failed_count == 0
    assert metrics.batch_count == 2 and metrics.average_batch_size == 4.0
    # 4 singles of 10 ms, a batch of 60 ms, a batch of 20 ms: 120 ms over 6 operations.
    assert metrics.average_latency == pytest.approx(0.020)
    # 12 events over 0.12 s of publishing + 1 s idle since the publisher was created.
    assert metrics.publish_rate() == pytest.approx(12 / 1.12)
    earlier = metrics.published_count
    await publisher.publish_saga_event(make_event())
    assert metrics.published_count == earlier, "get_metrics() returns a snapshot"
    assert publisher.get_reliability_metrics().success_rate() == 1.0


async def test_close_is_idempotent_and_refuses_every_use_after(broker: MemoryBroker) -> None:
    publisher = SagaEventPublisher(broker)
    await publisher.publish_saga_event(make_event())
    await publisher.close()
    await publisher.close()
    assert publisher.closed
    with pytest.raises(PublisherClosedError):
        await publisher.publish_saga_event(make_event())
    with pytest.raises(PublisherClosedError):
        await publisher.publish_batch([make_event()])
    with pytest.raises(PublisherClosedError):
        publisher.publish_batch_async([make_event()])
    with pytest.raises(PublisherClosedError):
        async with publisher.transaction("tx-late"):
            pass
    with pytest.raises(PublisherClosedError):
        await publisher.publish_with_transaction(make_event())
    assert broker.published == 1


async def test_close_waits_for_in_flight_publishes(fake_time: FakeTime) -> None:
    async with FaultyBroker(MemoryBroker(), confirm_delay=0.05) as broker:
        publisher = SagaEventPublisher(broker)
        pending = [asyncio.create_task(publisher.publish_saga_event(make_event()))
                   for _ in range(5)]
        await asyncio.sleep(0)  # let them start: they now wait for their confirms
        assert broker.confirmed == 0
        await publisher.close()
        assert broker.confirmed == 5
        assert all(t.done() and t.exception() is None for t in pending)
        assert publisher.get_metrics().published_count == 5


async def test_async_context_manager_closes(broker: MemoryBroker) -> None:
    async with SagaEventPublisher(broker) as publisher:
        await publisher.publish_saga_event(make_event())
    assert publisher.closed
    with pytest.raises(PublisherClosedError):
        await publisher.publish_saga_event(make_event())


async def test_transaction_id_must_be_non_empty(broker: MemoryBroker) -> None:
    publisher = SagaEventPublisher(broker)
    with pytest.raises(TransactionError):
        publisher.transaction("")
    event = SagaEvent(saga_id="s", type=EventType.SAGA_STARTED)
    await publisher.publish_with_transaction(event)
    assert broker.published == 1


async def test_cancelled_publish_counts_as_failed_and_does_not_block_close() -> None:
    async with FaultyBroker(MemoryBroker(), confirm_delay=10.0) as broker:
        publisher = SagaEventPublisher(broker, PublisherConfig(timeout=30.0))
        task = asyncio.create_task(publisher.publish_saga_event(make_event()))
        await asyncio.sleep(0)
        assert broker.delayed == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert publisher.get_metrics().failed_count == 1 and broker.confirmed == 0
        async with asyncio.timeout(5):
            await publisher.close()


async def test_close_timeout_cancels_stuck_async_batches() -> None:
    async with FaultyBroker(MemoryBroker(), confirm_delay=10.0) as broker:
        publisher = SagaEventPublisher(broker, PublisherConfig(timeout=30.0,
                                                               close_timeout=0.1))
        task = publisher.publish_batch_async([make_event(), make_event()])
        async with asyncio.timeout(5):
            await publisher.close()
        assert task.cancelled() and publisher.closed
        assert broker.confirmed == 0
