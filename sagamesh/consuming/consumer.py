"""The event consumer: broker subscription → priority dispatcher → workers → settle."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from .._durations import Duration, require_seconds
from .._eager import Rest, run_eager
from ..brokers.base import Broker, Delivery, Subscription
from ..errors import ConfigError
from ..events import EventType
from ..retry import ExponentialBackoffRetryPolicy, RetryPolicy
from .dispatcher import DispatcherDrainedError, PriorityDispatcher
from .idempotency import IdempotencyStore
from .metrics import ConsumerMetrics
from .processor import (
    ConsumeMetricsSink,
    ConsumeTracer,
    Decoder,
    MessageProcessor,
    Outcome,
    OutcomeKind,
)
from .router import EventRouter

log = logging.getLogger(__name__)


def _default_retry() -> RetryPolicy:
    return ExponentialBackoffRetryPolicy(max_attempts=5, base_delay=0.2, max_delay=10.0)


@dataclass(slots=True)
class ConsumerConfig:
    """How an :class:`EventConsumer` subscribes and processes.

    ``workers`` is how many deliveries run handlers at once; ``max_in_flight`` bounds unsettled
    deliveries per subscription, which bounds the dispatcher's buffer too.
    ``topics`` overrides the topics derived from ``topic_prefix`` / ``topic_strategy``.
    """

    topic_prefix: str = "saga.events"
    topic_strategy: Literal["single", "per_type"] = "single"
    group: str = "sagamesh"
    max_in_flight: int = 256
    ordering: Literal["per_saga", "none"] = "per_saga"
    retry: RetryPolicy = field(default_factory=_default_retry)
    dlq_topic: str = "saga.dlq"
    idempotency: IdempotencyStore | None = None
    shutdown_timeout: Duration = 30.0
    workers: int = 16
    topics: Sequence[str] | None = None

    def __post_init__(self) -> None:
        if self.topic_strategy not in ("single", "per_type"):
            raise ConfigError("topic_strategy must be 'single' or 'per_type'",
                              field="topic_strategy")
        if self.ordering not in ("per_saga", "none"):
            raise ConfigError("ordering must be 'per_saga' or 'none'", field="ordering")
        for name in ("max_in_flight", "workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1", field=name)
        self.shutdown_timeout = require_seconds(self.shutdown_timeout)
        if self.shutdown_timeout < 0:
            raise ConfigError("shutdown_timeout must be >= 0", field="shutdown_timeout")
        if not self.dlq_topic:
            raise ConfigError("dlq_topic must not be empty", field="dlq_topic")

    def resolve_topics(self, router: EventRouter) -> list[str]:
        if self.topics is not None:
            return list(self.topics)
        if self.topic_strategy == "single":
            return [self.topic_prefix]
        types = router.event_types()
        return [f"{self.topic_prefix}.{t.value}" for t in (types or list(EventType))]


class EventConsumer:
    """Consumes saga events from ``broker`` and runs ``router``'s handlers.

    Start with ``await consumer.start()`` or ``async with consumer``; ``stop()`` stops intake,
    lets buffered and running work finish within ``shutdown_timeout``, then cancels what is
    left and hands those deliveries back to the broker unacknowledged.
    """

    def __init__(self, broker: Broker, router: EventRouter,
                 config: ConsumerConfig | None = None, *, decoder: Decoder | None = None,
                 tracing: ConsumeTracer | None = None,
                 prometheus: ConsumeMetricsSink | None = None) -> None:
        self.broker = broker
        self.router = router
        self.config = config = config or ConsumerConfig()
        self.metrics = ConsumerMetrics()
        self.processor = MessageProcessor(
            router, retry=config.retry, dlq_topic=config.dlq_topic,
            idempotency=config.idempotency, broker_name=getattr(broker, "name", ""),
            group=config.group, decoder=decoder, metrics=self.metrics, tracing=tracing,
            prometheus=prometheus)
        self.dispatcher = self._new_dispatcher()
        self._subscriptions: list[Subscription] = []
        self._running_tasks: set[asyncio.Task[object]] = set()
        self._closing = False
        self._closed: asyncio.Event | None = None
        self._running = False

    @property
    def running(self) -> bool:
        return self._running

    @property
    def topics(self) -> list[str]:
        return self.config.resolve_topics(self.router)

    def _new_dispatcher(self) -> PriorityDispatcher:
        config = self.config
        return PriorityDispatcher(config.workers, ordered=config.ordering == "per_saga")

    async def start(self) -> None:
        if self._running:
            return
        self._closing = False
        self._closed = asyncio.Event()
        self.dispatcher = self._new_dispatcher()
        await self.router.start()
        try:
            ordered = self.config.ordering == "per_saga"
            for topic in self.topics:
                self._subscriptions.append(await self.broker.subscribe(
                    topic, self._on_delivery, group=self.config.group,
                    max_in_flight=self.config.max_in_flight, ordered=ordered))
        except BaseException:
            await self._shutdown(drain=False)
            raise
        self._running = True

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        await self._shutdown(drain=True)

    async def __aenter__(self) -> EventConsumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def get_metrics(self) -> ConsumerMetrics:
        snapshot = self.metrics.snapshot()
        snapshot.buffered = self.dispatcher.pending
        snapshot.in_flight = self.dispatcher.running
        snapshot.max_buffered = max(snapshot.max_buffered, self.dispatcher.max_pending)
        return snapshot

    # -- internals ------------------------------------------------------------------------
    async def _shutdown(self, *, drain: bool) -> None:
        self._closing = True
        dispatcher = self.dispatcher
        timeout = require_seconds(self.config.shutdown_timeout)
        if drain:
            try:
                await asyncio.wait_for(dispatcher.wait_idle(), timeout)
            except TimeoutError:
                log.warning("consumer drain timed out after %ss; returning %d waiting and "
                            "cancelling %d running deliveries", timeout, dispatcher.pending,
                            dispatcher.running)
        self.metrics.max_buffered = max(self.metrics.max_buffered, dispatcher.max_pending)
        dispatcher.drain()  # waiting deliveries are nacked back by their own tasks
        running = list(self._running_tasks)
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running, timeout=max(1.0, timeout))
        if self._closed is not None:
            self._closed.set()
        subscriptions, self._subscriptions = self._subscriptions, []
        await asyncio.gather(*(s.close() for s in subscriptions), return_exceptions=True)
        await self.router.stop()

    async def _on_delivery(self, delivery: Delivery) -> None:
        if self._closing:
            # Intake stopped: hold the delivery until the subscriptions close (an immediate
            # nack would come straight back), then hand it back unacknowledged.
            assert self._closed is not None
            await self._closed.wait()
            if not delivery.settled:
                await delivery.nack()
            return
        processor = self.processor
        metrics = self.metrics
        prepared = processor.prepare(delivery.message, delivery.attempt)
        if isinstance(prepared, Outcome):
            await processor.settle(delivery, prepared, self.broker.publish)
            return
        dispatcher = self.dispatcher
        key = prepared.event.saga_id
        if not dispatcher.try_acquire(key):
            try:
                await dispatcher.acquire(key, prepared.priority)
            except DispatcherDrainedError:
                await delivery.nack()
                return
        metrics.in_flight += 1
        if metrics.in_flight > metrics.max_concurrent:
            metrics.max_concurrent = metrics.in_flight
        try:
            ctx = processor.context(delivery.message, delivery.attempt,
                                    partition=delivery.partition, offset=delivery.offset)
            # Most handlers finish without waiting: only one that suspends is registered for
            # the drain to cancel (a handler that never yields cannot outlive the drain).
            outcome = run_eager(processor.execute(prepared, ctx))
            if outcome.__class__ is Rest:
                outcome = await self._finish(outcome)
            if outcome.kind is OutcomeKind.ACK:  # processor.settle's common case, inlined
                metrics.acked += 1
                await delivery.ack()
            else:
                await processor.settle(delivery, outcome, self.broker.publish)
        except asyncio.CancelledError:
            if not delivery.settled:  # drain timed out (or the subscription closed)
                await delivery.nack()
            raise
        except Exception:
            log.exception("processing message %s failed unexpectedly; nacked",
                          delivery.message.id)
            if not delivery.settled:
                await delivery.nack(processor.retry.delay(delivery.attempt) or None)
        finally:
            metrics.in_flight -= 1
            dispatcher.release(key)

    async def _finish(self, rest: Rest) -> Outcome:
        """Await a handler run that suspended, cancellable by a drain that times out."""
        task = asyncio.current_task()
        assert task is not None
        running_tasks = self._running_tasks
        running_tasks.add(task)
        try:
            outcome: Outcome = await rest
            return outcome
        finally:
            running_tasks.discard(task)
