"""One trace from ``start_saga`` through a real broker (NATS JetStream) to the consumer's
handler: saga → step → publish (traceparent in the message) → consume → handler, plus the
compensate span of a failing saga. SDK in-memory exporter; everything built from Settings."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sagamesh.consuming import EventRouter, HandlerContext
from sagamesh.errors import BusinessError
from sagamesh.events import SagaEvent
from sagamesh.observability.tracing import Tracing
from sagamesh.retry import NoRetryPolicy
from sagamesh.saga import SagaDefinition, StepContext, step
from sagamesh.settings import Settings
from sagamesh.worker import Worker, WorkerApp


async def _reserve(ctx: StepContext, data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "reserved": True}


async def _release(ctx: StepContext, data: dict[str, Any]) -> None:
    return None


async def _pay(ctx: StepContext, data: dict[str, Any]) -> dict[str, Any]:
    if data["amount"] > 100:
        raise BusinessError("declined", "card declined")
    return {**data, "paid": True}


DEFINITION = SagaDefinition(
    id="traced-order", name="Traced order",
    steps=[step("reserve", _reserve, _release), step("pay", _pay)],
    retry_policy=NoRetryPolicy())


@pytest.fixture
def exporter() -> tuple[InMemorySpanExporter, TracerProvider]:
    exp = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    return exp, provider


async def _wait_for(condition: Any, limit: float = 20.0) -> None:
    """Bounded wait for what the consumer's tasks record in plain dicts/lists."""
    async with asyncio.timeout(limit):
        while not condition():  # noqa: ASYNC110 - state lives in plain containers
            await asyncio.sleep(0.01)


async def test_one_trace_from_start_saga_to_the_consumers_handler(
        nats_url: str, unique: str,
        exporter: tuple[InMemorySpanExporter, TracerProvider]) -> None:
    exp, provider = exporter
    settings = Settings.load({
        "broker": {"type": "nats", "url": nats_url},
        "publisher": {"topic_prefix": f"trace.{unique}.events"},
        "consumer": {"topic_prefix": f"trace.{unique}.events", "group": f"trace-{unique}",
                     "dlq_topic": f"trace.{unique}.dlq"},
        "tracing": {"enabled": True},
    })
    router = EventRouter()
    seen: dict[str, tuple[int, int]] = {}  # event type -> (trace id, span id) inside handler

    @router.handler(handler_id="audit", processing_timeout=None)
    async def audit(event: SagaEvent, ctx: HandlerContext) -> None:
        current = trace.get_current_span().get_span_context()
        seen[f"{event.saga_id}:{event.type.value}"] = (current.trace_id, current.span_id)

    tracing = Tracing(tracer_provider=provider)
    async with Worker(settings, WorkerApp(router, [DEFINITION]), tracing=tracing) as worker:
        assert worker.coordinator is not None
        ok = await worker.coordinator.start_saga(DEFINITION, {"amount": 10}, saga_id=f"ok-{unique}")
        bad = await worker.coordinator.start_saga(DEFINITION, {"amount": 500},
                                                  saga_id=f"bad-{unique}")
        assert (await worker.coordinator.wait_for_completion(ok.id, 20)).state.value == \
            "completed"
        assert (await worker.coordinator.wait_for_completion(bad.id, 20)).state.value == \
            "compensated"
        await _wait_for(lambda: f"{ok.id}:saga.completed" in seen
                        and f"{bad.id}:saga.failed" in seen)
        await _wait_for(lambda: sum(s.name == "sagamesh.consume"
                                    for s in exp.get_finished_spans()) >= len(seen))

    spans = exp.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}
    sagas = {s.attributes["saga.id"]: s for s in spans if s.name == "sagamesh.saga"}
    assert set(sagas) == {ok.id, bad.id}

    for saga_id, saga_span in sagas.items():
        trace_id = saga_span.context.trace_id
        mine = [s for s in spans if s.attributes.get("saga.id") == saga_id]
        # ONE trace per saga: every span about it shares the saga span's trace id.
        assert {s.context.trace_id for s in mine} == {trace_id}
        assert saga_span.parent is None  # started by start_saga: the root
        names = {s.name for s in mine}
        assert {"sagamesh.saga", "sagamesh.step", "sagamesh.publish",
                "sagamesh.consume"} <= names
        for s in mine:
            if s.name == "sagamesh.step":
                assert by_id[s.parent.span_id].name == "sagamesh.saga"
                assert s.attributes["step.id"] in {"reserve", "pay"}
            if s.name == "sagamesh.publish":
                assert by_id[s.parent.span_id].name in {"sagamesh.saga", "sagamesh.step",
                                                        "sagamesh.compensate"}
                assert s.attributes["messaging.system"] == "nats"
                assert s.attributes["messaging.destination"] == f"trace.{unique}.events"
                assert s.kind is trace.SpanKind.PRODUCER
            if s.name == "sagamesh.consume":
                # The consumer's span is a child of the publisher's, across NATS.
                assert by_id[s.parent.span_id].name == "sagamesh.publish"
                assert s.attributes["messaging.system"] == "nats"
                assert s.kind is trace.SpanKind.CONSUMER
        # The handler ran inside a consume span of that same trace.
        last = "saga.completed" if saga_id == ok.id else "saga.failed"
        handler_trace, handler_span = seen[f"{saga_id}:{last}"]
        assert handler_trace == trace_id
        assert by_id[handler_span].name == "sagamesh.consume"

    bad_spans = [s for s in spans if s.attributes.get("saga.id") == bad.id]
    [compensate] = [s for s in bad_spans if s.name == "sagamesh.compensate"]
    assert compensate.attributes["step.id"] == "reserve"
    assert not sagas[bad.id].status.is_ok  # a compensated saga's span records the failure
    assert sagas[ok.id].status.is_ok
    failed_steps = [s for s in bad_spans if s.name == "sagamesh.step"
                    and s.attributes["step.id"] == "pay"]
    assert len(failed_steps) == 1 and not failed_steps[0].status.is_ok
