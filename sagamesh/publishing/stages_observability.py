"""Publish stages for observability: an OpenTelemetry span per publish (``traceparent`` in every
message's headers) and Prometheus counts and latency. Both use the ordinary stage protocol
(``sagamesh.publishing.stage``) and sit before ``reliability``, so one publish call, re-tries
included, is one span and one latency sample.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .stage import CallNext, Publication

if TYPE_CHECKING:
    from ..observability.metrics import Metrics
    from ..observability.tracing import Tracing


_ATTEMPTS = "sagamesh.metrics.attempts"


def _outcomes(pub: Publication, raised: bool) -> list[str]:
    """``ok`` | ``dead_lettered`` | ``failed`` per message, from the final results."""
    count = len(pub.messages)
    if raised or len(pub.results) != count:
        return ["failed"] * count
    parked = pub.dead_lettered
    return ["dead_lettered" if i in parked else ("ok" if error is None else "failed")
            for i, error in enumerate(pub.results)]


class TracingStage:
    """Opens span ``sagamesh.publish`` (kind producer) around the publish and writes its
    ``traceparent`` into each message, so a consumer's span becomes the publisher's child."""

    name = "tracing"

    def __init__(self, tracing: Tracing, *, system: str = "") -> None:
        self.tracing = tracing
        self.system = system

    async def __call__(self, pub: Publication, call_next: CallNext) -> None:
        tracing = self.tracing
        if not tracing.enabled or not pub.messages:
            await call_next(pub)
            return
        first = pub.messages[0]
        event_type = pub.events[0].type.value if len(pub.events) == 1 else ""
        with tracing.publish_span(system=self.system, destination=first.topic,
                                  saga_id=first.key or "", event_type=event_type) as span:
            if len(pub.messages) > 1:
                span.set_attribute("messaging.batch.message_count", len(pub.messages))
            if pub.transaction is not None:
                span.set_attribute("sagamesh.transaction", pub.transaction)
            for message in pub.messages:
                tracing.inject(message.headers)
            await call_next(pub)
            failed = [o for o in _outcomes(pub, False) if o != "ok"]
            if failed:
                span.set_attribute("sagamesh.failed_count", len(failed))


class MetricsStage:
    """Counts published messages by topic and outcome (``ok`` | ``failed`` |
    ``dead_lettered``, the last also as DLQ reason ``publish_failed``) and observes the
    confirmed publish latency."""

    name = "metrics"

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def __call__(self, pub: Publication, call_next: CallNext) -> None:
        started = time.perf_counter()
        if pub.extra is None:
            pub.extra = {}
        pub.extra[_ATTEMPTS] = 0  # counted by RetryCounterStage (after ``reliability``)
        raised = True
        try:
            await call_next(pub)
            raised = False
        finally:
            latency = time.perf_counter() - started
            metrics = self.metrics
            for message, outcome in zip(pub.messages, _outcomes(pub, raised), strict=True):
                metrics.published(message.topic, outcome,
                                  latency if outcome == "ok" else None)
                if outcome == "dead_lettered":
                    metrics.dead_lettered("publish_failed")


class RetryCounterStage:
    """Placed after ``reliability`` (``publisher.add_stage(stage, after="reliability")``): it
    sees every attempt, so each pass after the first of a publication counts its messages as
    publish retries. Re-tried subsets share the publication's ``extra`` with the original."""

    name = "metrics-retries"

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def __call__(self, pub: Publication, call_next: CallNext) -> None:
        extra = pub.extra
        if extra is not None and _ATTEMPTS in extra:
            seen = extra[_ATTEMPTS]
            extra[_ATTEMPTS] = seen + 1
            if seen:
                for message in pub.messages:
                    self.metrics.publish_retry(message.topic)
        await call_next(pub)


__all__ = ["MetricsStage", "RetryCounterStage", "TracingStage"]
