"""The consumer's OpenTelemetry span (child of the publisher's via traceparent, current while
handlers run) and its Prometheus counters."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sagamesh.brokers.memory import MemoryBroker
from sagamesh.consuming import (
    ConsumerConfig,
    EventConsumer,
    EventRouter,
    FailureAction,
    HandlerContext,
)
from sagamesh.events import EventType, SagaEvent
from sagamesh.observability.metrics import Metrics
from sagamesh.observability.tracing import SPAN_CONSUME, SPAN_PUBLISH, Tracing

from .consuming_helpers import DLQ, Collector, Signal, event, message


async def test_consume_span_continues_the_publisher_trace(broker: MemoryBroker) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(tracer_provider=provider)
    router = EventRouter()
    seen_span_ids: list[int] = []
    done = Signal()

    @router.handler(handler_id="traced")
    async def traced(ev: SagaEvent, ctx: HandlerContext) -> None:
        seen_span_ids.append(trace.get_current_span().get_span_context().span_id)
        done.hit()

    msg = message(event("s-trace", EventType.SAGA_COMPLETED))
    with tracing.publish_span(system="memory", destination=msg.topic, saga_id="s-trace"):
        tracing.inject(msg.headers)
    async with EventConsumer(broker, router, ConsumerConfig(group="otel"), tracing=tracing):
        await broker.publish(msg)
        await done.wait(1)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    publish, consume = spans[SPAN_PUBLISH], spans[SPAN_CONSUME]
    assert consume.parent is not None and consume.parent.span_id == publish.context.span_id
    assert consume.context.trace_id == publish.context.trace_id
    assert seen_span_ids == [consume.context.span_id]  # the handler ran inside the span
    assert consume.attributes is not None
    assert consume.attributes["saga.id"] == "s-trace"
    assert consume.attributes["messaging.system"] == "memory"
    assert consume.attributes["sagamesh.outcome"] == "ack"


async def test_prometheus_counts_outcomes_per_handler(
        broker: MemoryBroker, dlq: Collector) -> None:
    prom = Metrics(namespace="t")
    router = EventRouter()
    done = Signal()

    @router.handler(EventType.SAGA_STARTED, handler_id="good")
    async def good(ev: SagaEvent, ctx: HandlerContext) -> None:
        done.hit()

    @router.handler(EventType.SAGA_FAILED, handler_id="bad", on_failure=FailureAction.DEAD_LETTER)
    async def bad(ev: SagaEvent, ctx: HandlerContext) -> None:
        raise RuntimeError("x")

    async with EventConsumer(broker, router, ConsumerConfig(group="prom", dlq_topic=DLQ),
                             prometheus=prom):
        await broker.publish_many([message(event(f"g{i}")) for i in range(3)]
                                  + [message(event("b", EventType.SAGA_FAILED))])
        await done.wait(3)
        await dlq.wait(1)
    assert prom.value("consumed", handler="good", outcome="ok") == 3
    assert prom.value("consumed", handler="bad", outcome="failed") == 1
    assert prom.value("consumed", handler="bad", outcome="dead_lettered") == 1
    assert prom.value("dlq_messages", reason="handler_dead_letter") == 1
    assert prom.value("consume_latency_seconds_count", handler="good") == 3
