"""Retries, backoff bounds, per-attempt timeouts, confirm deadline and DLQ routing, in numbers."""

from __future__ import annotations

import random
from datetime import datetime

import pytest

from sagamesh.brokers.memory import MemoryBroker
from sagamesh.errors import BrokerUnavailableError, PublishTimeoutError, RetryableError
from sagamesh.message import Headers
from sagamesh.publishing import PublisherConfig, ReliabilityConfig, SagaEventPublisher, is_retryable
from sagamesh.retry import ExponentialBackoffRetryPolicy
from sagamesh.serialization import from_message, get_serializer, to_message
from sagamesh.testing.faults import FaultyBroker

from .conftest import FakeTime, collect, make_event


def reliable(**overrides: object) -> PublisherConfig:
    fields: dict[str, object] = {"max_retry_attempts": 3, "retry_backoff": 0.1,
                                 "max_retry_backoff": 1.0, "enable_dlq": False}
    fields.update(overrides)
    return PublisherConfig(reliability=ReliabilityConfig(**fields))  # type: ignore[arg-type]


async def test_first_failures_are_retried_until_confirmed(fake_time: FakeTime) -> None:
    async with FaultyBroker(MemoryBroker(), fail_first=2) as broker:
        publisher = SagaEventPublisher(broker, reliable(), sleep=fake_time.sleep,
                                       clock=fake_time.clock)
        event = make_event()
        await publisher.publish_saga_event(event)
        assert broker.attempts_by_id[event.id] == 3 and broker.failures == 2
        assert broker.confirmed_ids == [event.id]
        rel = publisher.get_reliability_metrics()
        assert (rel.total_retries, rel.successful_retries, rel.failed_retries) == (2, 1, 1)
        assert rel.retry_success_rate() == 0.5 and rel.success_rate() == 1.0
        assert len(fake_time.sleeps) == 2
        assert publisher.get_metrics().published_count == 1


async def test_exhausted_retries_raise_the_last_error_without_dlq(fake_time: FakeTime) -> None:
    async with FaultyBroker(MemoryBroker(), fail_first=100) as broker:
        publisher = SagaEventPublisher(broker, reliable(max_retry_attempts=4),
                                       sleep=fake_time.sleep, clock=fake_time.clock)
        with pytest.raises(BrokerUnavailableError, match="injected failure 5/100"):
            await publisher.publish_saga_event(make_event())
        assert broker.attempts == 5 and broker.inner.published == 0
        rel = publisher.get_reliability_metrics()
        assert (rel.total_retries, rel.successful_retries, rel.failed_retries) == (4, 0, 4)
        assert rel.success_rate() == 0.0 and rel.failed_messages == 1
        assert publisher.get_metrics().failed_count == 1


async def test_basic_config_retries_retry_attempts_times_at_retry_interval(
        fake_time: FakeTime) -> None:
    async with FaultyBroker(MemoryBroker(), fail_first=100) as broker:
        publisher = SagaEventPublisher(broker, PublisherConfig(retry_attempts=3,
                                                               retry_interval=0.25),
                                       sleep=fake_time.sleep, clock=fake_time.clock)
        with pytest.raises(BrokerUnavailableError):
            await publisher.publish_saga_event(make_event())
        assert broker.attempts == 4
        assert fake_time.sleeps == [0.25, 0.25, 0.25]


async def test_backoff_is_exponential_with_jitter_and_capped(fake_time: FakeTime) -> None:
    async with FaultyBroker(MemoryBroker(), fail_first=7) as broker:
        config = reliable(max_retry_attempts=7, retry_backoff=0.1, max_retry_backoff=0.5,
                          jitter=0.2)
        publisher = SagaEventPublisher(broker, config, sleep=fake_time.sleep,
                                       clock=fake_time.clock)
        await publisher.publish_saga_event(make_event())
        assert broker.attempts == 8 and len(fake_time.sleeps) == 7
        for attempt, delay in enumerate(fake_time.sleeps, start=1):
            ceiling = min(0.5, 0.1 * 2 ** (attempt - 1))
            assert ceiling * 0.8 <= delay <= ceiling, (attempt, delay)
        assert max(fake_time.sleeps) <= 0.5
        assert fake_time.sleeps[0] < 0.1 * 2 * 0.8  # the first wait is the short one


async def test_backoff_follows_a_seeded_policy_exactly(fake_time: FakeTime) -> None:
    policy = ExponentialBackoffRetryPolicy(max_attempts=6, base_delay=0.05, max_delay=0.3,
                                           rng=random.Random(1234))
    twin = ExponentialBackoffRetryPolicy(max_attempts=6, base_delay=0.05, max_delay=0.3,
                                         rng=random.Random(1234))
    async with FaultyBroker(MemoryBroker(), fail_first=5) as broker:
        publisher = SagaEventPublisher(broker, reliable(retry_policy=policy),
                                       sleep=fake_time.sleep, clock=fake_time.clock)
        await publisher.publish_saga_event(make_event())
    assert fake_time.sleeps == [twin.delay(n) for n in range(1, 6)]


async def test_each_attempt_times_out_and_counts(fake_time: FakeTime) -> None:
    async with FaultyBroker(MemoryBroker(), confirm_delay=5.0) as broker:
        config = PublisherConfig(timeout=0.05, retry_attempts=2, retry_interval=0.0)
        publisher = SagaEventPublisher(broker, config, sleep=fake_time.sleep)
        with pytest.raises(PublishTimeoutError) as info:
            await publisher.publish_saga_event(make_event())
        assert isinstance(info.value, TimeoutError)
        assert broker.attempts == 3 and broker.delayed == 3
        assert broker.inner.published == 0, "a timed-out attempt never reached the broker"
        assert publisher.get_reliability_metrics().timeouts == 3


async def test_slow_confirm_within_timeout_succeeds_first_time() -> None:
    async with FaultyBroker(MemoryBroker(), confirm_delay=0.02) as broker:
        publisher = SagaEventPublisher(broker, PublisherConfig(timeout=2.0))
        await publisher.publish_saga_event(make_event())
        assert (broker.attempts, broker.confirmed) == (1, 1)
        assert publisher.get_reliability_metrics().timeouts == 0


async def test_confirm_deadline_bounds_all_attempts(fake_time: FakeTime) -> None:
    async with FaultyBroker(MemoryBroker(), fail_first=100) as broker:
        config = reliable(max_retry_attempts=10, retry_backoff=0.05, max_retry_backoff=5.0,
                          jitter=0.0, confirm_timeout=0.2)
        publisher = SagaEventPublisher(broker, config, sleep=fake_time.sleep,
                                       clock=fake_time.clock)
        with pytest.raises(PublishTimeoutError, match=r"confirm_timeout=0\.2s after 3 attempt"):
            await publisher.publish_saga_event(make_event())
        # waits 0.05 and 0.1 fit in 0.2 s; the next 0.2 s wait would overshoot it.
        assert fake_time.sleeps == [0.05, 0.1] and broker.attempts == 3


async def test_dlq_gets_the_original_message_with_the_four_headers(fake_time: FakeTime) -> None:
    inner = MemoryBroker()
    poison = make_event(saga_id="order-13")
    async with FaultyBroker(inner, fail_when=lambda m: m.topic == "saga.events"
                            and m.id == poison.id) as broker:
        dlq = await collect(inner, "saga.dlq")
        config = reliable(max_retry_attempts=2, enable_dlq=True, dlq_topic="saga.dlq")
        publisher = SagaEventPublisher(broker, config, sleep=fake_time.sleep,
                                       clock=fake_time.clock)
        before = datetime.now().astimezone()
        await publisher.publish_saga_event(poison)  # parked in the DLQ: no exception
        [parked] = await dlq.wait_for(1)
        original = to_message(poison, "saga.events", get_serializer("json"))
        assert (parked.id, parked.key, parked.body) == (original.id, original.key, original.body)
        assert parked.topic == "saga.dlq"
        assert parked.headers[Headers.DLQ_REASON].startswith("BrokerUnavailableError: ")
        assert parked.headers[Headers.ORIGINAL_TOPIC] == "saga.events"
        assert parked.headers[Headers.ATTEMPTS] == "3"
        first = datetime.fromisoformat(parked.headers[Headers.FIRST_FAILURE])
        assert before <= first <= datetime.now().astimezone()
        for name in (Headers.CONTENT_TYPE, Headers.EVENT_ID, Headers.EVENT_TYPE, Headers.SAGA_ID):
            assert parked.headers[name] == original.headers[name]
        assert from_message(parked) == poison
        assert broker.attempts_by_id[poison.id] == 4  # 3 to the topic, 1 to the DLQ
        rel = publisher.get_reliability_metrics()
        assert (rel.dlq_messages_count, rel.failed_retries, rel.total_retries) == (1, 2, 2)
        metrics = publisher.get_metrics()
        assert (metrics.published_count, metrics.failed_count) == (0, 1)


async def test_when_the_dlq_is_unreachable_too_the_error_is_raised(fake_time: FakeTime) -> None:
    async with FaultyBroker(MemoryBroker(), fail_first=100) as broker:
        config = reliable(max_retry_attempts=1, enable_dlq=True)
        publisher = SagaEventPublisher(broker, config, sleep=fake_time.sleep,
                                       clock=fake_time.clock)
        with pytest.raises(BrokerUnavailableError):
            await publisher.publish_saga_event(make_event())
        assert broker.attempts == 3  # 2 attempts + 1 DLQ attempt
        assert publisher.get_reliability_metrics().dlq_messages_count == 0


async def test_non_retryable_broker_error_goes_to_dlq_after_one_attempt(
        fake_time: FakeTime) -> None:
    inner = MemoryBroker()
    async with FaultyBroker(inner, fail_when=lambda m: m.topic == "saga.events",
                            error=lambda reason: ValueError(f"message too large ({reason})")
                            ) as broker:
        dlq = await collect(inner, "saga.dlq")
        publisher = SagaEventPublisher(broker, reliable(enable_dlq=True),
                                       sleep=fake_time.sleep, clock=fake_time.clock)
        await publisher.publish_saga_event(make_event())
        [parked] = await dlq.wait_for(1)
        assert parked.headers[Headers.ATTEMPTS] == "1"
        assert parked.headers[Headers.DLQ_REASON].startswith("ValueError: message too large")
        assert fake_time.sleeps == []


def test_retryable_classification() -> None:
    from sagamesh.errors import BusinessError, InvalidEventError, SerializationError

    assert is_retryable(BrokerUnavailableError("down"))
    assert is_retryable(PublishTimeoutError("slow"))
    assert is_retryable(ConnectionResetError())
    assert is_retryable(RetryableError(ValueError("x")))
    assert not is_retryable(SerializationError("bad"))
    assert not is_retryable(InvalidEventError("bad"))
    assert not is_retryable(BusinessError("c", "m"))
    assert not is_retryable(ValueError("too large"))


async def test_every_kth_failure_is_retried_and_counted(fake_time: FakeTime) -> None:
    inner = MemoryBroker()
    async with FaultyBroker(inner, fail_every=3) as broker:
        seen = await collect(inner, "saga.events")
        publisher = SagaEventPublisher(broker, reliable(), sleep=fake_time.sleep,
                                       clock=fake_time.clock)
        events = [make_event() for _ in range(20)]
        for event in events:
            await publisher.publish_saga_event(event)
        await seen.wait_for(20)
        assert sorted(seen.ids) == sorted(e.id for e in events)
        # attempts 3, 6, 9, ... fail: 20 successes need 29 attempts (9 failures).
        assert (broker.attempts, broker.failures) == (29, 9)
        rel = publisher.get_reliability_metrics()
        assert (rel.total_retries, rel.successful_retries, rel.failed_retries) == (9, 9, 0)


async def test_dropped_connection_is_survived_by_retries(fake_time: FakeTime) -> None:
    inner = MemoryBroker()
    async with FaultyBroker(inner, drop_connection_after=3, reconnect_after=2) as broker:
        publisher = SagaEventPublisher(broker, reliable(), sleep=fake_time.sleep,
                                       clock=fake_time.clock)
        for _ in range(6):
            await publisher.publish_saga_event(make_event())
        assert broker.drops == 1 and broker.failures == 2 and inner.published == 6
        assert publisher.get_reliability_metrics().successful_retries == 1




async def test_timer_is_armed_only_for_attempts_that_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    from typing import Any

    from sagamesh.publishing.stages import reliability

    armed: list[float] = []
    real_finish_within = reliability.finish_within
    real_finish_by = reliability.finish_by

    async def counting(rest: Any, limit: float) -> bool:
        armed.append(limit)
        return await real_finish_within(rest, limit)

    async def counting_first(rest: Any, deadlines: Any) -> bool:  # first attempts
        armed.append(deadlines.limit)
        return await real_finish_by(rest, deadlines)

    monkeypatch.setattr(reliability, "finish_within", counting)
    monkeypatch.setattr(reliability, "finish_by", counting_first)
    async with MemoryBroker() as memory:
        publisher = SagaEventPublisher(memory, PublisherConfig(timeout=3.0))
        for _ in range(100):
            await publisher.publish_saga_event(make_event())
        await publisher.publish_batch([make_event() for _ in range(10)])
        assert armed == [] and memory.published == 110
    async with FaultyBroker(MemoryBroker(), confirm_delay=0.001) as slow:
        publisher = SagaEventPublisher(slow, PublisherConfig(timeout=3.0))
        for _ in range(3):
            await publisher.publish_saga_event(make_event())
        assert armed == [3.0, 3.0, 3.0] and slow.confirmed == 3
