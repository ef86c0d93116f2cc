"""Batches: pipelined, all confirmed, only failures re-tried, failures named; async batches."""

from __future__ import annotations

import asyncio

import pytest

from sagamesh.brokers.memory import MemoryBroker
from sagamesh.errors import BatchPublishError, BrokerUnavailableError, InvalidEventError
from sagamesh.publishing import (
    BatchPublishResult,
    PublisherConfig,
    ReliabilityConfig,
    SagaEventPublisher,
)
from sagamesh.testing.faults import FaultyBroker

from .conftest import FakeTime, collect, make_event


class CountingBroker(MemoryBroker):
    def __init__(self) -> None:
        super().__init__()
        self.publish_many_sizes: list[int] = []
        self.publish_calls = 0

    async def publish(self, message):  # type: ignore[no-untyped-def]
        self.publish_calls += 1
        await super().publish(message)

    async def publish_many(self, messages):  # type: ignore[no-untyped-def]
        self.publish_many_sizes.append(len(messages))
        return await super().publish_many(messages)


async def test_batch_is_one_pipelined_call_and_keeps_order() -> None:
    async with CountingBroker() as broker:
        seen = await collect(broker, "saga.events")
        publisher = SagaEventPublisher(broker)
        events = [make_event(saga_id="s-1") for _ in range(50)]
        result = await publisher.publish_batch(events)
        assert broker.publish_many_sizes == [50] and broker.publish_calls == 0
        assert (result.published_count, result.failed_count, result.error) == (50, 0, None)
        assert (await seen.wait_for(50)) and seen.ids == [e.id for e in events]


async def test_big_batches_are_split_into_batch_size_chunks() -> None:
    async with CountingBroker() as broker:
        publisher = SagaEventPublisher(broker, PublisherConfig(batch_size=40))
        result = await publisher.publish_batch([make_event() for _ in range(100)])
        assert broker.publish_many_sizes == [40, 40, 20]
        assert result.published_count == 100 and broker.published == 100
        assert publisher.get_metrics().batch_count == 1


async def test_partial_failure_names_only_the_failed_ids_and_retries_only_them(
        fake_time: FakeTime) -> None:
    inner = MemoryBroker()
    events = [make_event() for _ in range(10)]
    poison = {events[2].id, events[7].id}
    async with FaultyBroker(inner, fail_when=lambda m: m.id in poison) as broker:
        seen = await collect(inner, "saga.events")
        publisher = SagaEventPublisher(broker, sleep=fake_time.sleep, clock=fake_time.clock)
        with pytest.raises(BatchPublishError) as info:
            await publisher.publish_batch(events)
        assert set(info.value.failed_event_ids) == poison and info.value.total == 10
        assert all(isinstance(e, BrokerUnavailableError) for e in info.value.failures.values())
        # default retry_attempts=3: the 2 poison events got 4 attempts, the rest exactly 1.
        assert {i: broker.attempts_by_id[i] for i in poison} == dict.fromkeys(poison, 4)
        assert sum(broker.attempts_by_id.values()) == 8 + 2 * 4
        assert fake_time.sleeps == [1.0, 1.0, 1.0]
        await seen.wait_for(8)
        assert set(seen.ids) == {e.id for e in events} - poison
        metrics = publisher.get_metrics()
        assert (metrics.published_count, metrics.failed_count) == (8, 2)
        rel = publisher.get_reliability_metrics()
        assert (rel.total_retries, rel.failed_retries, rel.successful_retries) == (6, 6, 0)


async def test_transient_failures_in_a_batch_recover(fake_time: FakeTime) -> None:
    inner = MemoryBroker()
    async with FaultyBroker(inner, fail_first=3) as broker:
        publisher = SagaEventPublisher(broker, sleep=fake_time.sleep, clock=fake_time.clock)
        events = [make_event() for _ in range(10)]
        result = await publisher.publish_batch(events)
        assert (result.published_count, result.failed_count) == (10, 0)
        assert broker.attempts == 13 and inner.published == 10
        rel = publisher.get_reliability_metrics()
        assert (rel.total_retries, rel.successful_retries) == (3, 3)
        assert rel.success_rate() == 1.0 and rel.retry_success_rate() == 1.0


async def test_dead_lettered_batch_members_do_not_raise_but_are_reported(
        fake_time: FakeTime) -> None:
    inner = MemoryBroker()
    events = [make_event() for _ in range(5)]
    bad = events[1].id
    async with FaultyBroker(inner, fail_when=lambda m: m.id == bad and m.topic != "dlq") \
            as broker:
        dlq = await collect(inner, "dlq")
        config = PublisherConfig(reliability=ReliabilityConfig(
            max_retry_attempts=1, dlq_topic="dlq"))
        publisher = SagaEventPublisher(broker, config, sleep=fake_time.sleep,
                                       clock=fake_time.clock)
        result = await publisher.publish_batch(events)
        assert result.error is None
        assert (result.published_count, result.failed_count) == (4, 1)
        assert result.failed_event_ids == [bad] == result.dead_lettered_event_ids
        assert (await dlq.wait_for(1))[0].id == bad


async def test_invalid_event_refuses_the_whole_batch_before_sending(broker: MemoryBroker) -> None:
    publisher = SagaEventPublisher(broker)
    events = [make_event(), make_event().replace(saga_id=""), make_event()]
    with pytest.raises(InvalidEventError, match="event #1"):
        await publisher.publish_batch(events)
    assert broker.published == 0


async def test_async_batch_returns_a_task_at_once(broker: MemoryBroker) -> None:
    publisher = SagaEventPublisher(broker)
    events = [make_event() for _ in range(25)]
    task = publisher.publish_batch_async(events)
    assert isinstance(task, asyncio.Task) and not task.done()
    assert broker.published == 0
    result = await task
    assert isinstance(result, BatchPublishResult)
    assert (result.published_count, result.failed_count, result.error) == (25, 0, None)
    assert result.duration >= 0 and result.failed_event_ids == []
    assert broker.published == 25


async def test_async_batch_failures_land_in_the_result(fake_time: FakeTime) -> None:
    events = [make_event() for _ in range(4)]
    async with FaultyBroker(MemoryBroker(), fail_when=lambda m: m.id == events[0].id) as broker:
        publisher = SagaEventPublisher(broker, PublisherConfig(retry_attempts=1),
                                       sleep=fake_time.sleep, clock=fake_time.clock)
        result = await publisher.publish_batch_async(events)
        assert (result.published_count, result.failed_count) == (3, 1)
        assert result.failed_event_ids == [events[0].id]
        assert isinstance(result.error, BatchPublishError)
        invalid = await publisher.publish_batch_async([make_event().replace(type="")])
        assert isinstance(invalid.error, InvalidEventError) and invalid.failed_count == 1


async def test_close_awaits_the_async_batches(broker: MemoryBroker) -> None:
    publisher = SagaEventPublisher(broker)
    tasks = [publisher.publish_batch_async([make_event() for _ in range(10)]) for _ in range(3)]
    assert not any(t.done() for t in tasks)
    await publisher.close()
    assert all(t.done() for t in tasks)
    assert [t.result().published_count for t in tasks] == [10, 10, 10]
    assert broker.published == 30


async def test_empty_batch_is_a_no_op(broker: MemoryBroker) -> None:
    publisher = SagaEventPublisher(broker)
    result = await publisher.publish_batch([])
    assert (result.published_count, result.failed_count) == (0, 0)
    assert broker.published == 0
