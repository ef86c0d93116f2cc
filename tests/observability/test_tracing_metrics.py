"""Tracing spans and header propagation (SDK in-memory exporter); Prometheus metrics values
and the /metrics endpoint."""

from __future__ import annotations

import urllib.request

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sagamesh.observability.metrics import METRIC_NAMES, Metrics
from sagamesh.observability.tracing import SPAN_CONSUME, SPAN_PUBLISH, Tracing
from sagamesh.testing.services import free_port


@pytest.fixture
def exporter() -> tuple[InMemorySpanExporter, TracerProvider]:
    exp = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    return exp, provider


def test_consume_span_is_child_of_publish_span_via_headers(
    exporter: tuple[InMemorySpanExporter, TracerProvider],
) -> None:
    exp, provider = exporter
    tracing = Tracing(tracer_provider=provider)
    headers: dict[str, str] = {}
    with tracing.publish_span(system="nats", destination="saga.events", saga_id="s1"):
        tracing.inject(headers)
        trace_id = tracing.current_trace_id()
    assert headers["traceparent"].split("-")[1] == trace_id
    with tracing.consume_span(system="nats", destination="saga.events", saga_id="s1",
                              headers=headers):
        pass
    spans = {s.name: s for s in exp.get_finished_spans()}
    pub, con = spans[SPAN_PUBLISH], spans[SPAN_CONSUME]
    assert con.parent is not None and con.parent.span_id == pub.context.span_id
    assert con.context.trace_id == pub.context.trace_id
    assert pub.attributes is not None and pub.attributes["messaging.system"] == "nats"
    assert pub.attributes["saga.id"] == "s1"


def test_span_records_errors(exporter: tuple[InMemorySpanExporter, TracerProvider]) -> None:
    exp, provider = exporter
    tracing = Tracing(tracer_provider=provider)
    with pytest.raises(ValueError), tracing.step_span(saga_id="s", step_id="pay", attempt=2):
        raise ValueError("declined")
    (span,) = exp.get_finished_spans()
    assert span.attributes is not None and span.attributes["step.id"] == "pay"
    assert not span.status.is_ok
    assert span.events[0].name == "exception"


def test_disabled_tracing_does_nothing() -> None:
    tracing = Tracing.disabled()
    headers: dict[str, str] = {}
    with tracing.publish_span(system="memory", destination="t", saga_id="s") as span:
        tracing.inject(headers)
    assert span is None and headers == {} and tracing.current_trace_id() == ""


def test_metrics_count_and_observe() -> None:
    metrics = Metrics()
    metrics.published("saga.events", "ok", 0.002)
    metrics.published("saga.events", "ok", 0.004)
    metrics.published("saga.events", "failed")
    metrics.consumed("orders", "ok", 0.01)
    metrics.dead_lettered("handler_failed")
    metrics.saga_started("order")
    metrics.saga_started("order")
    metrics.saga_finished("order", "completed", 0.5)
    metrics.step("order", "pay", "ok", 0.1)
    assert metrics.value("published_total", topic="saga.events", outcome="ok") == 2
    assert metrics.value("published_total", topic="saga.events", outcome="failed") == 1
    assert metrics.value("publish_latency_seconds_count", topic="saga.events") == 2
    assert metrics.value("publish_latency_seconds_sum", topic="saga.events") == pytest.approx(0.006)
    assert metrics.value("active_sagas", definition="order") == 1
    assert metrics.value("sagas_total", definition="order", outcome="completed") == 1
    assert metrics.value("dlq_messages_total", reason="handler_failed") == 1


def test_two_instances_do_not_collide() -> None:
    a, b = Metrics(), Metrics()
    a.consumed("h", "ok")
    assert b.value("consumed_total", handler="h", outcome="ok") == 0


def test_metrics_endpoint_serves_every_documented_metric() -> None:
    metrics = Metrics()
    metrics.published("t", "ok", 0.001)
    metrics.consumed("h", "ok", 0.001)
    metrics.dead_lettered("r")
    metrics.saga_started("d")
    metrics.saga_finished("d", "completed", 1.0)
    metrics.step("d", "s", "ok", 0.1)
    metrics.publish_retry("t")
    port = free_port()
    server = metrics.serve(port=port)
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    finally:
        server.shutdown()
    text = body.decode()
    for name in METRIC_NAMES:
        assert f"sagamesh_{name}" in text, name
