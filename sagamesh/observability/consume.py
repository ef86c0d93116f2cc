"""Tracing and metrics for the consume side, as a :class:`MessageProcessor` that observes.

Every consumer (``EventConsumer``, the FastStream mount) runs its messages through one
``MessageProcessor``; :func:`observe_processor` returns one that additionally runs the handlers
inside span ``sagamesh.consume`` (child of the publisher's span via ``traceparent``) and counts
outcomes, latency and dead letters. The per-message logic itself is unchanged.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..consuming.context import HandlerContext
from ..consuming.processor import MessageProcessor, Outcome, OutcomeKind, Prepared
from ..message import Message

if TYPE_CHECKING:
    from .metrics import Metrics
    from .tracing import Tracing

_HANDLER_OUTCOME = {
    OutcomeKind.ACK: "ok",
    OutcomeKind.RETRY: "retried",
    OutcomeKind.DEAD_LETTER: "dead_lettered",
    OutcomeKind.DISCARD: "failed",
}


def _reason(outcome: Outcome) -> str:
    return outcome.reason.split(":", 1)[0] or "unknown"


class ObservedProcessor(MessageProcessor):
    """A :class:`MessageProcessor` that traces and counts what it processes."""

    def __init__(self, base: MessageProcessor, *, tracing: Tracing | None,
                 metrics: Metrics | None, system: str = "") -> None:
        super().__init__(base.router, retry=base.retry, dlq_topic=base.dlq_topic,
                         idempotency=base.idempotency, broker_name=base.broker_name,
                         group=base.group, decoder=base.decode, metrics=base.metrics)
        self.tracing = tracing if tracing is not None and tracing.enabled else None
        self.observer = metrics
        self.system = system or base.broker_name

    def prepare(self, message: Message, attempt: int = 1) -> Prepared | Outcome:
        prepared = super().prepare(message, attempt)
        observer = self.observer
        if observer is not None and isinstance(prepared, Outcome):
            if prepared.kind is OutcomeKind.DEAD_LETTER:
                observer.consumed("<undecodable>", "dead_lettered")
                observer.dead_lettered(_reason(prepared))
            else:
                observer.consumed("<unrouted>", "skipped")
        return prepared

    async def execute(self, prepared: Prepared, ctx: HandlerContext | None = None) -> Outcome:
        tracing = self.tracing
        started = time.perf_counter()
        if tracing is None:
            outcome = await super().execute(prepared, ctx)
        else:
            message = prepared.message
            with tracing.consume_span(system=self.system, destination=message.topic,
                                      saga_id=prepared.event.saga_id, headers=message.headers,
                                      event_type=prepared.event.type.value) as span:
                outcome = await super().execute(prepared, ctx)
                span.set_attribute("sagamesh.outcome", outcome.kind.value)
                span.set_attribute("messaging.message.id", message.id)
                if outcome.kind is not OutcomeKind.ACK and outcome.reason:
                    span.set_attribute("sagamesh.reason", outcome.reason[:500])
        observer = self.observer
        if observer is not None:
            elapsed = time.perf_counter() - started
            label = "skipped" if outcome.note == "duplicate" else _HANDLER_OUTCOME[outcome.kind]
            for route in prepared.routes:
                observer.consumed(route.handler_id, label, elapsed)
            if outcome.kind is OutcomeKind.DEAD_LETTER:
                observer.dead_lettered(_reason(outcome))
        return outcome


def observe_processor(processor: MessageProcessor, *, tracing: Tracing | None = None,
                      metrics: Metrics | None = None, system: str = "") -> MessageProcessor:
    """``processor`` itself when there is nothing to observe, else an observing copy that
    shares its router, policy, idempotency store and metrics."""
    if (tracing is None or not tracing.enabled) and metrics is None:
        return processor
    return ObservedProcessor(processor, tracing=tracing, metrics=metrics, system=system)


__all__ = ["ObservedProcessor", "observe_processor"]
