"""Saga and step observability from the coordinator's own events.

The coordinator publishes a :class:`SagaEvent` for every transition, with the time it happened,
the step, the attempt, the duration and ``metadata["definition_id"]``. :class:`ObservedSagaSink`
sits between the coordinator and its real event sink and turns those events into

* spans ``sagamesh.saga`` (start → terminal event), ``sagamesh.step`` (step started → completed
  or failed, one per attempt) and ``sagamesh.compensate``, timed by the events' timestamps;
  each event is then published inside its saga/step span, so the publish span, the message's
  ``traceparent`` and every consumer's span join the saga's trace;
* Prometheus ``sagas_total`` / ``saga_duration_seconds`` / ``active_sagas`` and ``steps_total``
  / ``step_duration_seconds`` by definition, step and outcome.

The coordinator needs no change, and the sink works with any inner sink (the in-memory
publisher or a ``SagaEventPublisher`` over a broker).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import BatchPublishError
from ..events import EventType, SagaEvent

if TYPE_CHECKING:
    from ..saga.publisher import SagaEventSink
    from .metrics import Metrics
    from .tracing import Tracing

_TERMINAL = {
    EventType.SAGA_COMPLETED: "completed",
    EventType.SAGA_FAILED: "failed",
    EventType.SAGA_CANCELLED: "cancelled",
    EventType.SAGA_TIMED_OUT: "timed_out",
}
_STEP_END = {
    EventType.SAGA_STEP_COMPLETED: "completed",
    EventType.SAGA_STEP_FAILED: "failed",
}
_COMPENSATION_END = {
    EventType.COMPENSATION_STEP_COMPLETED: "compensated",
    EventType.COMPENSATION_STEP_FAILED: "compensation_failed",
}
_OUTCOMES = ("completed", "compensated", "failed", "cancelled", "timed_out")


def _ns(event: SagaEvent) -> int:
    return int(event.timestamp.timestamp() * 1_000_000_000)


@dataclass(slots=True)
class _SagaSpans:
    saga: Any
    steps: dict[str, Any] = field(default_factory=dict)


class ObservedSagaSink:
    """Wraps a coordinator's event sink; see the module docstring."""

    def __init__(self, inner: SagaEventSink, *, tracing: Tracing | None = None,
                 metrics: Metrics | None = None) -> None:
        self.inner = inner
        self.tracing = tracing if tracing is not None and tracing.enabled else None
        self.metrics = metrics
        self._spans: dict[str, _SagaSpans] = {}
        self._active: dict[str, str] = {}  # saga id -> definition id (for the gauge)

    def __getattr__(self, name: str) -> Any:  # subscribe, unsubscribe, close, metrics, ...
        return getattr(self.inner, name)

    async def publish_saga_event(self, event: SagaEvent) -> None:
        if self.metrics is not None:
            self._count(event)
        if self.tracing is None:
            await self.inner.publish_saga_event(event)
            return
        with self._traced(event) as traced:
            await self.inner.publish_saga_event(traced)

    async def publish_batch(self, events: Sequence[SagaEvent]) -> None:
        if self.metrics is not None:
            for event in events:
                self._count(event)
        batch = getattr(self.inner, "publish_batch", None)
        if self.tracing is not None:
            stamped: list[SagaEvent] = []
            scope = contextlib.ExitStack()
            with scope:
                for index, event in enumerate(events):
                    # The batch is published inside the first event's span (one saga per batch).
                    context = self._traced(event)
                    stamped.append(scope.enter_context(context) if index == 0
                                   else _exit_at_once(context))
                await self._publish_all(batch, stamped)
            return
        await self._publish_all(batch, list(events))

    async def _publish_all(self, batch: Any, events: list[SagaEvent]) -> None:
        if callable(batch):
            await batch(events)
            return
        failures: dict[str, BaseException] = {}
        for event in events:
            try:
                await self.inner.publish_saga_event(event)
            except Exception as exc:
                failures[event.id] = exc
        if failures:
            raise BatchPublishError(failures, len(events))

    # -- metrics --------------------------------------------------------------------------
    def _count(self, event: SagaEvent) -> None:
        metrics = self.metrics
        assert metrics is not None
        kind = event.type
        definition = str(event.metadata.get("definition_id", "") or "unknown")
        if kind is EventType.SAGA_STARTED:
            if event.saga_id not in self._active:
                self._active[event.saga_id] = definition
                metrics.saga_started(definition)
            return
        terminal = _TERMINAL.get(kind)
        if terminal is not None:
            state = event.new_state if isinstance(event.new_state, str) else ""
            outcome = state if state in _OUTCOMES else terminal
            if self._active.pop(event.saga_id, None) is None:
                metrics.saga_started(definition)  # recovered here: keep the gauge balanced
            metrics.saga_finished(definition, outcome, event.duration.total_seconds())
            return
        step = _STEP_END.get(kind) or _COMPENSATION_END.get(kind)
        if step is not None:
            metrics.step(definition, event.step_id or "?", step,
                         event.duration.total_seconds())

    # -- tracing --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _traced(self, event: SagaEvent) -> Iterator[SagaEvent]:
        """Open/close the spans ``event`` marks and yield it stamped with its trace ids,
        with the span it belongs to as the current span."""
        from opentelemetry import trace

        assert self.tracing is not None
        tracer = self.tracing.tracer
        kind = event.type
        when = _ns(event)
        spans = self._spans.get(event.saga_id)
        if spans is None:
            definition = str(event.metadata.get("definition_id", ""))
            saga_span = tracer.start_span(
                "sagamesh.saga", start_time=when,
                attributes={"saga.id": event.saga_id, "saga.definition_id": definition})
            spans = self._spans[event.saga_id] = _SagaSpans(saga_span)
        span = spans.saga
        ending: Any = None
        key = f"{'c' if kind.value.startswith('compensation') else 's'}:{event.step_id}"
        if kind in (EventType.SAGA_STEP_STARTED, EventType.COMPENSATION_STEP_STARTED):
            name = "sagamesh.step" if kind is EventType.SAGA_STEP_STARTED \
                else "sagamesh.compensate"
            with trace.use_span(spans.saga, end_on_exit=False):
                span = tracer.start_span(name, start_time=when, attributes={
                    "saga.id": event.saga_id, "step.id": event.step_id,
                    "step.attempt": event.attempt})
            spans.steps[key] = span
        elif kind in _STEP_END or kind in _COMPENSATION_END:
            span = spans.steps.pop(key, None)
            if span is None:  # started before a recovery: a span for the end alone
                name = "sagamesh.step" if kind in _STEP_END else "sagamesh.compensate"
                with trace.use_span(spans.saga, end_on_exit=False):
                    span = tracer.start_span(name, start_time=when - int(
                        event.duration.total_seconds() * 1e9), attributes={
                        "saga.id": event.saga_id, "step.id": event.step_id,
                        "step.attempt": event.attempt})
            ending = span
            if kind in (EventType.SAGA_STEP_FAILED, EventType.COMPENSATION_STEP_FAILED):
                _fail(span, event)
        elif kind is EventType.RETRY_ATTEMPTED or kind is EventType.RETRY_EXHAUSTED:
            spans.saga.add_event(kind.value, {"step.id": event.step_id,
                                              "step.attempt": event.attempt}, timestamp=when)
        elif kind in _TERMINAL:
            ending = spans.saga
            if kind is not EventType.SAGA_COMPLETED:
                _fail(spans.saga, event)
            for leftover in spans.steps.values():
                leftover.end(end_time=when)
            del self._spans[event.saga_id]
        context = span.get_span_context()
        stamped = event.replace(trace_id=format(context.trace_id, "032x"),
                                span_id=format(context.span_id, "016x"))
        try:
            with trace.use_span(span, end_on_exit=False):
                yield stamped
        finally:
            if ending is not None:
                ending.end(end_time=when)


def _fail(span: Any, event: SagaEvent) -> None:
    from opentelemetry import trace

    message = event.error.message if event.error is not None else event.type.value
    span.set_status(trace.Status(trace.StatusCode.ERROR, message))


def _exit_at_once(context: contextlib.AbstractContextManager[SagaEvent]) -> SagaEvent:
    with context as event:
        return event


__all__ = ["ObservedSagaSink"]
