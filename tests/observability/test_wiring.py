"""Prometheus and OpenTelemetry wired through the factories: publish stage, consumer hooks and
the coordinator's observed event sink, on the memory broker (numbers, not just presence)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sagamesh import factories
from sagamesh.consuming import EventRouter, HandlerContext
from sagamesh.errors import BusinessError, RetryableError
from sagamesh.events import EventType, SagaEvent
from sagamesh.observability.metrics import Metrics
from sagamesh.observability.saga import ObservedSagaSink
from sagamesh.observability.tracing import Tracing
from sagamesh.publishing import SagaEventPublisher
from sagamesh.publishing.stages_observability import (
    MetricsStage,
    RetryCounterStage,
    TracingStage,
)
from sagamesh.retry import FixedDelayRetryPolicy, NoRetryPolicy
from sagamesh.saga import InMemoryEventPublisher, SagaDefinition, StepContext, step
from sagamesh.settings import Settings
from sagamesh.worker import Worker, WorkerApp

calls: dict[str, int] = {}


async def _flaky(ctx: StepContext, data: dict[str, Any]) -> dict[str, Any]:
    calls[ctx.saga_id] = calls.get(ctx.saga_id, 0) + 1
    if data.get("flaky") and ctx.attempt == 1:
        raise RetryableError("try again")
    return data


async def _pay(ctx: StepContext, data: dict[str, Any]) -> dict[str, Any]:
    if data["amount"] > 100:
        raise BusinessError("declined", "no")
    return data


async def _undo(ctx: StepContext, data: dict[str, Any]) -> None:
    return None


DEFINITION = SagaDefinition(id="metered", name="Metered", steps=[
    step("reserve", _flaky, _undo, retry_policy=FixedDelayRetryPolicy(3, 0.001)),
    step("pay", _pay, retry_policy=NoRetryPolicy())])


async def _wait_for(condition: Any, limit: float = 10.0) -> None:
    async with asyncio.timeout(limit):
        while not condition():  # noqa: ASYNC110 - metrics are plain values
            await asyncio.sleep(0.005)


async def test_metrics_for_publish_consume_dlq_sagas_and_steps() -> None:
    settings = Settings.load({"metrics": {"enabled": True, "port": 0},
                              "consumer": {"retry": {"kind": "none"}}})
    router = EventRouter()
    handled: list[str] = []

    @router.handler(EventType.SAGA_COMPLETED, EventType.SAGA_FAILED, handler_id="done")
    async def done(event: SagaEvent, ctx: HandlerContext) -> None:
        if event.type is EventType.SAGA_FAILED:
            raise ValueError("alerting is down")  # no retries: dead-lettered at once
        handled.append(event.saga_id)

    async with Worker(settings, WorkerApp(router, [DEFINITION])) as worker:
        metrics, coordinator = worker.metrics, worker.coordinator
        assert metrics is not None and coordinator is not None
        for saga_id, data in (("a", {"amount": 1}), ("b", {"amount": 1, "flaky": True}),
                              ("c", {"amount": 500})):
            await coordinator.start_saga(DEFINITION, data, saga_id=saga_id)
        for saga_id in "abc":
            await coordinator.wait_for_completion(saga_id, 10)
        assert metrics.value("active_sagas", definition="metered") == 0
        await _wait_for(lambda: metrics.value("dlq_messages_total", reason="retries_exhausted")
                        == 1 and len(handled) == 2)
        published = worker.publisher.get_metrics().published_count  # type: ignore[union-attr]

    assert metrics.value("sagas_total", definition="metered", outcome="completed") == 2
    assert metrics.value("sagas_total", definition="metered", outcome="compensated") == 1
    assert metrics.value("saga_duration_seconds_count", definition="metered") == 3
    # reserve: a ok, b failed once then ok, c ok; pay: a, b ok, c failed; c's reserve undone.
    assert metrics.value("steps_total", definition="metered", step="reserve",
                         outcome="completed") == 3
    assert metrics.value("steps_total", definition="metered", step="reserve",
                         outcome="failed") == 1
    assert metrics.value("steps_total", definition="metered", step="pay",
                         outcome="failed") == 1
    assert metrics.value("steps_total", definition="metered", step="reserve",
                         outcome="compensated") == 1
    assert metrics.value("published_total", topic="saga.events", outcome="ok") == published
    assert metrics.value("publish_latency_seconds_count", topic="saga.events") == published
    assert metrics.value("consumed_total", handler="done", outcome="ok") == 2
    assert metrics.value("consumed_total", handler="done", outcome="failed") == 1
    assert metrics.value("consumed_total", handler="done", outcome="dead_lettered") == 1
    assert metrics.value("consume_latency_seconds_count", handler="done") == 3


async def test_metrics_stage_counts_failures_and_dead_letters() -> None:
    from sagamesh.brokers.memory import MemoryBroker
    from sagamesh.publishing import PublisherConfig, ReliabilityConfig
    from sagamesh.testing.faults import FaultyBroker

    metrics = Metrics()
    async with FaultyBroker(MemoryBroker(), fail_when=lambda m: m.topic == "saga.events") as b:

        async def no_wait(delay: float) -> None:
            return None

        config = PublisherConfig(stages=[MetricsStage(metrics)], reliability=ReliabilityConfig(
            max_retry_attempts=2, retry_backoff=0.001, dlq_topic="saga.dlq"))
        publisher = SagaEventPublisher(b, config, sleep=no_wait)
        publisher.add_stage(RetryCounterStage(metrics), after="reliability")
        await publisher.publish_saga_event(SagaEvent(saga_id="s", type=EventType.SAGA_STARTED))
        await publisher.close()
    assert metrics.value("published_total", topic="saga.events", outcome="dead_lettered") == 1
    assert metrics.value("published_total", topic="saga.events", outcome="ok") == 0
    assert metrics.value("dlq_messages_total", reason="publish_failed") == 1
    assert metrics.value("publish_retries_total", topic="saga.events") == 2  # 3 attempts


async def test_tracing_stage_puts_traceparent_of_its_span_on_every_message() -> None:
    from sagamesh.brokers.memory import MemoryBroker
    from sagamesh.publishing import PublisherConfig

    exp = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    tracing = Tracing(tracer_provider=provider)
    async with MemoryBroker() as broker:
        got: list[dict[str, str]] = []

        async def collect(delivery: Any) -> None:
            got.append(dict(delivery.message.headers))

        await broker.subscribe("saga.events", collect, group="t")
        publisher = SagaEventPublisher(broker, PublisherConfig(
            stages=[TracingStage(tracing, system="memory")]))
        events = [SagaEvent(saga_id=f"s{i}", type=EventType.SAGA_STARTED) for i in range(3)]
        await publisher.publish_batch(events)
        await publisher.close()
        await _wait_for(lambda: len(got) == 3)
    [span] = exp.get_finished_spans()
    assert span.name == "sagamesh.publish"
    assert span.attributes["messaging.batch.message_count"] == 3
    assert span.attributes["messaging.system"] == "memory"
    expected = f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}"
    assert [h["traceparent"].rsplit("-", 1)[0] for h in got] == [expected] * 3


async def test_observed_sink_keeps_the_gauge_balanced_for_recovered_sagas() -> None:
    """A saga that ends here but started elsewhere (recovery) neither goes negative nor
    leaks in ``active_sagas``; the inner sink still gets every event."""
    metrics = Metrics()
    inner = InMemoryEventPublisher()
    seen: list[SagaEvent] = []
    inner.subscribe(None, seen.append)
    sink = ObservedSagaSink(inner, metrics=metrics)
    meta = {"definition_id": "d"}
    await sink.publish_saga_event(SagaEvent(saga_id="x", type=EventType.SAGA_COMPLETED,
                                            new_state="completed", metadata=meta))
    await sink.publish_batch([
        SagaEvent(saga_id="y", type=EventType.SAGA_STARTED, metadata=meta),
        SagaEvent(saga_id="y", type=EventType.SAGA_CANCELLED, new_state="cancelled",
                  metadata=meta)])
    assert metrics.value("active_sagas", definition="d") == 0
    assert metrics.value("sagas_total", definition="d", outcome="completed") == 1
    assert metrics.value("sagas_total", definition="d", outcome="cancelled") == 1
    assert [e.saga_id for e in seen] == ["x", "y", "y"]
    assert sink.subscribe == inner.subscribe  # the rest of the inner sink stays reachable


@pytest.mark.parametrize("enabled", [False, True])
def test_factories_build_observability_only_when_enabled(enabled: bool) -> None:
    settings = Settings.load({"tracing": {"enabled": enabled},
                              "metrics": {"enabled": enabled, "namespace": "shop"}})
    tracing, metrics = factories.create_tracing(settings), factories.create_metrics(settings)
    assert (tracing is not None, metrics is not None) == (enabled, enabled)
    if metrics is not None:
        metrics.published("t", "ok", 0.01)
        assert b"shop_published_total" in metrics.exposition()
    stages = factories.publisher_config(settings, tracing=tracing, metrics=metrics).stages
    assert [type(s).__name__ for s in stages] == (["TracingStage", "MetricsStage"]
                                                  if enabled else [])
