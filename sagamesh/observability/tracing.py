"""OpenTelemetry spans for publish, consume, saga, step and compensate.

Only ``opentelemetry-api`` is needed at run time (imported when tracing is enabled); the
application installs an SDK and exporter. ``traceparent`` travels in message headers, so a
consumer's span is a child of the publisher's across any broker.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

SPAN_PUBLISH = "sagamesh.publish"
SPAN_CONSUME = "sagamesh.consume"
SPAN_SAGA = "sagamesh.saga"
SPAN_STEP = "sagamesh.step"
SPAN_COMPENSATE = "sagamesh.compensate"


@dataclass
class Tracing:
    """A handle on a tracer; ``Tracing.disabled()`` costs nothing on every call site.

    ``tracer_provider`` defaults to the global one, so an app's SDK set-up is picked up.
    """

    enabled: bool = True
    tracer_provider: Any = None
    _tracer: Any = field(default=None, init=False, repr=False)

    @classmethod
    def disabled(cls) -> Tracing:
        return cls(enabled=False)

    @property
    def tracer(self) -> Any:
        if self._tracer is None:
            from opentelemetry import trace

            self._tracer = trace.get_tracer("sagamesh", tracer_provider=self.tracer_provider)
        return self._tracer

    def inject(self, headers: MutableMapping[str, str]) -> None:
        """Write the current span's ``traceparent`` (and ``tracestate``) into ``headers``."""
        if not self.enabled:
            return
        from opentelemetry import propagate

        propagate.inject(headers)

    @contextlib.contextmanager
    def span(
        self,
        name: str,
        *,
        kind: str = "internal",
        attributes: Mapping[str, Any] | None = None,
        parent_headers: Mapping[str, str] | None = None,
    ) -> Iterator[Any]:
        """A current span; with ``parent_headers`` its parent is the publisher's span."""
        if not self.enabled:
            yield None
            return
        from opentelemetry import propagate, trace

        context = propagate.extract(parent_headers) if parent_headers is not None else None
        span_kind = {
            "producer": trace.SpanKind.PRODUCER,
            "consumer": trace.SpanKind.CONSUMER,
        }.get(kind, trace.SpanKind.INTERNAL)
        attrs = {k: v for k, v in (attributes or {}).items() if v is not None}
        with self.tracer.start_as_current_span(
            name, context=context, kind=span_kind, attributes=attrs
        ) as span:
            try:
                yield span
            except BaseException as exc:
                span.record_exception(exc)
                span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)))
                raise

    def publish_span(self, *, system: str, destination: str, saga_id: str,
                     event_type: str = "") -> contextlib.AbstractContextManager[Any]:
        return self.span(SPAN_PUBLISH, kind="producer", attributes={
            "messaging.system": system, "messaging.destination": destination,
            "messaging.destination.name": destination, "saga.id": saga_id,
            "saga.event_type": event_type or None})

    def consume_span(self, *, system: str, destination: str, saga_id: str,
                     headers: Mapping[str, str],
                     event_type: str = "") -> contextlib.AbstractContextManager[Any]:
        return self.span(SPAN_CONSUME, kind="consumer", parent_headers=headers, attributes={
            "messaging.system": system, "messaging.destination": destination,
            "messaging.destination.name": destination, "saga.id": saga_id,
            "saga.event_type": event_type or None})

    def saga_span(self, *, saga_id: str,
                  definition_id: str) -> contextlib.AbstractContextManager[Any]:
        return self.span(SPAN_SAGA, attributes={"saga.id": saga_id,
                                                "saga.definition_id": definition_id})

    def step_span(self, *, saga_id: str, step_id: str,
                  attempt: int) -> contextlib.AbstractContextManager[Any]:
        return self.span(SPAN_STEP, attributes={"saga.id": saga_id, "step.id": step_id,
                                                "step.attempt": attempt})

    def compensate_span(self, *, saga_id: str,
                        step_id: str) -> contextlib.AbstractContextManager[Any]:
        return self.span(SPAN_COMPENSATE, attributes={"saga.id": saga_id, "step.id": step_id})

    def current_trace_id(self) -> str:
        """The current trace id as 32 hex chars ('' when none), for SagaEvent.trace_id."""
        if not self.enabled:
            return ""
        from opentelemetry import trace

        ctx = trace.get_current_span().get_span_context()
        return format(ctx.trace_id, "032x") if ctx.is_valid else ""
