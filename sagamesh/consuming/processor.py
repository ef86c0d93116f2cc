"""Broker-agnostic per-message logic shared by :class:`EventConsumer` and framework mounts
(FastStream): decode → route → run handlers → decide the :class:`Outcome` → settle.

``prepare`` is synchronous (decode and route only) so a dispatcher can order work by priority
and saga before anything runs; ``execute`` runs the handlers; ``process`` does both; ``settle``
applies an outcome to a :class:`~sagamesh.brokers.base.Delivery`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from .._eager import DONE, finish_within, step
from ..brokers.base import Delivery
from ..dlq_message import dead_letter
from ..errors import HandlerTimeoutError, SerializationError
from ..events import SagaEvent
from ..message import Headers, Message
from ..retry import RetryPolicy
from .context import HandlerContext
from .handler import FailureAction
from .idempotency import IdempotencyStore
from .metrics import ConsumerMetrics
from .router import EventRouter, Route

log = logging.getLogger(__name__)

Decoder = Callable[[Message], SagaEvent]
Publish = Callable[[Message], Awaitable[None]]


class ConsumeTracer(Protocol):
    """What the processor needs from :class:`sagamesh.observability.Tracing`."""

    enabled: bool

    def consume_span(self, *, system: str, destination: str, saga_id: str,
                     headers: Mapping[str, str],
                     event_type: str = "") -> contextlib.AbstractContextManager[Any]: ...


class ConsumeMetricsSink(Protocol):
    """What the processor needs from :class:`sagamesh.observability.metrics.Metrics`."""

    def consumed(self, handler: str, outcome: str, duration: float | None = None) -> None: ...

    def dead_lettered(self, reason: str) -> None: ...


class OutcomeKind(StrEnum):
    ACK = "ack"
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"
    DISCARD = "discard"


class DLQReason(StrEnum):
    """The first word of the ``sagamesh-dlq-reason`` header the consumer writes."""

    DECODE_ERROR = "decode_error"
    RETRIES_EXHAUSTED = "retries_exhausted"
    HANDLER_DEAD_LETTER = "handler_dead_letter"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to do with a delivery. ``dlq_message`` is the ready DLQ copy for DEAD_LETTER;
    ``delay`` the redelivery delay for RETRY; ``note`` says why for ACK (duplicate, unrouted)."""

    kind: OutcomeKind
    delay: float | None = None
    reason: str = ""
    error: BaseException | None = None
    dlq_message: Message | None = None
    note: str = ""


ACK = Outcome(OutcomeKind.ACK)
DUPLICATE = Outcome(OutcomeKind.ACK, note="duplicate")
UNROUTED = Outcome(OutcomeKind.ACK, note="unrouted")
DISCARD = Outcome(OutcomeKind.DISCARD)


@dataclass(slots=True)
class Prepared:
    """A decoded, routed message ready to execute; ``priority`` is its top handler's."""

    message: Message
    event: SagaEvent
    routes: Sequence[Route]
    priority: int
    attempt: int


def default_decoder() -> Decoder:
    from ..serialization import from_message

    return from_message


FIRST_FAILURES_KEPT = 10_000  # failing messages whose first failure time is remembered


class MessageProcessor:
    """Everything between "a message arrived" and "ack / nack(delay) / dead-letter".

    A message that fails and is redelivered keeps the time of its first failure here (the
    newest ``FIRST_FAILURES_KEPT``), so its dead letter's ``sagamesh-first-failure`` says when
    the trouble began, not when the retries ran out.
    """

    def __init__(
        self,
        router: EventRouter,
        *,
        retry: RetryPolicy,
        dlq_topic: str = "saga.dlq",
        idempotency: IdempotencyStore | None = None,
        broker_name: str = "",
        group: str | None = None,
        decoder: Decoder | None = None,
        metrics: ConsumerMetrics | None = None,
        tracing: ConsumeTracer | None = None,
        prometheus: ConsumeMetricsSink | None = None,
    ) -> None:
        self.router = router
        self.retry = retry
        self.dlq_topic = dlq_topic
        self.idempotency = idempotency
        self.broker_name = broker_name
        self.group = group
        self.decode = decoder or default_decoder()
        self.metrics = metrics or ConsumerMetrics()
        self.tracing = tracing if tracing is not None and tracing.enabled else None
        self.prometheus = prometheus
        self._first_failures: OrderedDict[str, datetime] = OrderedDict()

    # -- phase 1: decode and route (synchronous) ------------------------------------------
    def prepare(self, message: Message, attempt: int = 1) -> Prepared | Outcome:
        self.metrics.received += 1
        try:
            event = self.decode(message)
        except SerializationError as exc:
            self.metrics.decode_errors += 1
            return self._dead_letter(message, attempt, DLQReason.DECODE_ERROR, exc)
        except Exception as exc:  # a custom decoder broke its contract; still not a crash
            self.metrics.decode_errors += 1
            wrapped = SerializationError(f"decoder raised {type(exc).__name__}: {exc}")
            return self._dead_letter(message, attempt, DLQReason.DECODE_ERROR, wrapped)
        routes = self.router.route(event)
        if not routes:
            self.metrics.unrouted += 1
            return UNROUTED
        return Prepared(message, event, routes, routes[0].priority, attempt)

    # -- phase 2: run the handlers --------------------------------------------------------
    def execute(self, prepared: Prepared,
                ctx: HandlerContext | None = None) -> Coroutine[Any, Any, Outcome]:
        """Run ``prepared``'s handlers (await the result). Without tracing this hands back the
        inner coroutine itself: one frame less per event."""
        if ctx is None:
            ctx = self.context(prepared.message, prepared.attempt)
        if self.tracing is None:
            return self._execute(prepared, ctx)
        return self._execute_traced(prepared, ctx)

    async def _execute_traced(self, prepared: Prepared, ctx: HandlerContext) -> Outcome:
        assert self.tracing is not None
        message = prepared.message
        event = prepared.event
        # The span is current while handlers run, so what they publish becomes its child; its
        # parent is the publisher's span (``traceparent`` header).
        with self.tracing.consume_span(system=self.broker_name, destination=message.topic,
                                       saga_id=event.saga_id, headers=message.headers,
                                       event_type=str(event.type)) as span:
            outcome = await self._execute(prepared, ctx)
            if span is not None:
                span.set_attribute("sagamesh.outcome", outcome.kind.value)
            return outcome

    async def _execute(self, prepared: Prepared, ctx: HandlerContext) -> Outcome:
        """Handler failures are decided in ``_run_all``; anything else (the idempotency store
        is unreachable, a callback broke) is infrastructure: retry later, never dead-letter."""
        try:
            routes = prepared.routes
            if self.idempotency is None and len(routes) == 1:  # the common case, inlined
                route = routes[0]
                error = await self._run(route, prepared.event, ctx)
                if error is None:
                    return ACK
                action = await self._failure_action(route, prepared.event, error)
                return self._decide(prepared, [(route, error, action)])
            return await self._run_all(prepared, ctx)
        except Exception as exc:
            log.exception("processing %s failed outside its handlers; retrying",
                          prepared.message.id)
            return Outcome(OutcomeKind.RETRY, delay=self.retry.delay(prepared.attempt),
                           reason=f"infrastructure: {type(exc).__name__}: {exc}", error=exc)

    async def _run_all(self, prepared: Prepared, ctx: HandlerContext) -> Outcome:
        event = prepared.event
        store = self.idempotency
        failures: list[tuple[Route, BaseException, FailureAction]] = []
        ran = 0
        for route in prepared.routes:
            key = f"{event.id}:{route.handler_id}" if store is not None else ""
            if store is not None and await store.contains(key):
                if self.prometheus is not None:
                    self.prometheus.consumed(route.handler_id, "skipped")
                continue
            ran += 1
            error = await self._run(route, event, ctx)
            if error is None:
                if store is not None:
                    await store.add(key)
            else:
                failures.append((route, error, await self._failure_action(route, event, error)))
        if not ran:
            self.metrics.duplicates += 1
            return DUPLICATE
        if not failures:
            return ACK
        return self._decide(prepared, failures)

    async def process(self, message: Message, attempt: int = 1, *,
                      partition: int | None = None, offset: int | None = None) -> Outcome:
        """``prepare`` + ``execute`` for callers without a dispatcher of their own."""
        prepared = self.prepare(message, attempt)
        if isinstance(prepared, Outcome):
            return prepared
        ctx = self.context(message, attempt, partition=partition, offset=offset)
        return await self.execute(prepared, ctx)

    def context(self, message: Message, attempt: int, *, partition: int | None = None,
                offset: int | None = None) -> HandlerContext:
        # Positional: a keyword call of the generated __init__ costs about twice as much.
        return HandlerContext(message.id, message.topic, attempt, partition, offset,
                              message.headers, self.broker_name, self.group)

    async def _run(self, route: Route, event: SagaEvent,
                   ctx: HandlerContext) -> BaseException | None:
        metrics = route.metrics or route.handler.metrics
        if route.error is not None:  # a filter raised
            metrics.record(0.0, ok=False)
            if self.prometheus is not None:
                self.prometheus.consumed(route.handler_id, "failed", 0.0)
            return route.error
        limiter = route.limiter
        if limiter is not None:
            await limiter.acquire()
        call = route.call or route.handler.handle_saga_event
        start = time.perf_counter()
        timed_out = False
        error: BaseException | None = None
        try:
            if route.timeout is None:
                await call(event, ctx)
            else:
                # Stepped eagerly: a handler that finishes without suspending (most do) never
                # arms a timer; one that suspends finishes under the deadline, counted from
                # ``start``.
                rest = step(call(event, ctx))
                if rest is not DONE:
                    timed_out = await finish_within(
                        rest, route.timeout - (time.perf_counter() - start))
                    if timed_out:
                        error = HandlerTimeoutError(
                            f"handler {route.handler_id!r} exceeded {route.timeout:g}s")
        except Exception as exc:
            error = exc
        finally:
            if limiter is not None:
                limiter.release()
        duration = time.perf_counter() - start
        if error is None:  # HandlerMetrics.record's common case, inlined (hot path)
            metrics.total_processed += 1
            metrics.successful_count += 1
            metrics.total_processing_time += duration
            if duration > metrics.max_processing_time:
                metrics.max_processing_time = duration
        else:
            metrics.record(duration, ok=False, timed_out=timed_out)
        if self.prometheus is not None:
            self.prometheus.consumed(route.handler_id, "ok" if error is None else "failed",
                                     duration)
        if error is not None:
            self.metrics.handler_failures += 1
        elif route.after is not None:
            try:
                await route.after(event, duration)
            except Exception:
                log.exception("on_event_processed of %s raised (ignored)", route.handler_id)
        return error

    @staticmethod
    async def _failure_action(route: Route, event: SagaEvent,
                              error: BaseException) -> FailureAction:
        try:
            return FailureAction(await route.handler.on_event_failed(event, error))
        except Exception:
            log.exception("on_event_failed of %s raised; retrying", route.handler_id)
            return FailureAction.RETRY

    def _decide(self, prepared: Prepared,
                failures: list[tuple[Route, BaseException, FailureAction]]) -> Outcome:
        attempt = prepared.attempt
        for route, error, action in failures:
            if action is FailureAction.DEAD_LETTER:
                return self._dead_letter(prepared.message, attempt, DLQReason.HANDLER_DEAD_LETTER,
                                         error, handler_id=route.handler_id)
        retrying = [f for f in failures
                    if f[2] in (FailureAction.RETRY, FailureAction.REQUEUE)]
        if not retrying:
            return DISCARD
        requeue_only = all(f[2] is FailureAction.REQUEUE for f in retrying)
        for route, error, _ in retrying:
            if not self.retry.should_retry(attempt, error):
                return self._dead_letter(prepared.message, attempt, DLQReason.RETRIES_EXHAUSTED,
                                         error, handler_id=route.handler_id)
        route, error, _ = retrying[0]
        first = self._first_failures
        if prepared.message.id not in first:
            first[prepared.message.id] = datetime.now(UTC)
            if len(first) > FIRST_FAILURES_KEPT:
                first.popitem(last=False)
        if self.prometheus is not None:
            self.prometheus.consumed(route.handler_id, "retried")
        delay = 0.0 if requeue_only else self.retry.delay(attempt)
        return Outcome(OutcomeKind.RETRY, delay=delay, reason=f"{route.handler_id}: {error}",
                       error=error)

    def _dead_letter(self, message: Message, attempt: int, reason: DLQReason,
                     error: BaseException, *, handler_id: str | None = None) -> Outcome:
        text = f"{reason.value}: {type(error).__name__}: {error}"
        dlq = dead_letter(message, dlq_topic=self.dlq_topic, reason=text,
                          attempts=attempt + _prior_attempts(message.headers), error=error,
                          first_failure=self._first_failures.pop(message.id, None))
        if handler_id is not None:
            dlq.headers[Headers.DLQ_HANDLER] = handler_id
        return Outcome(OutcomeKind.DEAD_LETTER, reason=text, error=error, dlq_message=dlq)

    async def handle_delivery(self, delivery: Delivery, publish: Publish) -> Outcome:
        """Process and settle one delivery (for callers without a dispatcher, e.g. a framework
        subscriber wrapped as a :class:`Delivery`). Never raises for a bad message."""
        message = delivery.message
        outcome = await self.process(message, delivery.attempt, partition=delivery.partition,
                                     offset=delivery.offset)
        await self.settle(delivery, outcome, publish)
        return outcome

    # -- settling -------------------------------------------------------------------------
    async def settle(self, delivery: Delivery, outcome: Outcome, publish: Publish) -> None:
        """Apply ``outcome``: ack; nack(delay); or publish the DLQ copy and then ack (if that
        publish fails the delivery is nacked, so nothing is lost)."""
        metrics = self.metrics
        kind = outcome.kind
        if kind is OutcomeKind.ACK:
            metrics.acked += 1
            await delivery.ack()
        elif kind is OutcomeKind.RETRY:
            metrics.retried += 1
            await delivery.nack(outcome.delay or None)
        elif kind is OutcomeKind.DISCARD:
            metrics.discarded += 1
            await delivery.ack()
        else:
            assert outcome.dlq_message is not None
            try:
                await publish(outcome.dlq_message)
            except Exception:
                metrics.dlq_publish_failures += 1
                log.exception("could not dead-letter message %s; nacked for redelivery",
                              delivery.message.id)
                await delivery.nack(self.retry.delay(delivery.attempt) or None)
                return
            metrics.dead_lettered += 1
            if self.prometheus is not None:
                self.prometheus.dead_lettered(outcome.reason.split(":", 1)[0])
                handler_id = outcome.dlq_message.headers.get(Headers.DLQ_HANDLER)
                if handler_id is not None:
                    self.prometheus.consumed(handler_id, "dead_lettered")
            await delivery.ack()


def _prior_attempts(headers: Mapping[str, str]) -> int:
    """Attempts a recovered message already used before it left the DLQ (0 for fresh ones)."""
    if Headers.DLQ_RECOVERIES not in headers:
        return 0
    try:
        return max(0, int(headers.get(Headers.ATTEMPTS, "0")))
    except ValueError:
        return 0
