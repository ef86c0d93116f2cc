"""``mount(fs_broker, router, consumer_config)``: an :class:`EventRouter` inside a FastStream app.

Each topic the config resolves to becomes one FastStream subscriber (visible in AsyncAPI) on
the consumer group; every message runs through the consume side's own
:class:`MessageProcessor` (decode, route, filters, handler timeouts and ``max_concurrency``,
idempotency, metrics, tracing, DLQ copy) and its :class:`PriorityDispatcher` (priorities,
per-saga order, ``workers`` bound), exactly as in :class:`EventConsumer`. The differences are
only in the transport glue:

* a failed event is retried *in place*: the delivery stays unacknowledged (kept alive on
  JetStream), the policy's delay is waited and the handlers run again with ``ctx.attempt`` + 1,
  so a retry never lets a later event of the same saga overtake it;
* the DLQ copy is published through the FastStream broker in the sagamesh wire format (a
  documented publisher in AsyncAPI), and only then is the original acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._durations import require_seconds
from ..consuming import ConsumerConfig, EventRouter, MessageProcessor, PriorityDispatcher
from ..consuming.metrics import ConsumerMetrics
from ..consuming.processor import ConsumeMetricsSink, ConsumeTracer, Outcome, OutcomeKind
from ..message import Message
from .bindings import Binding, binding_for

if TYPE_CHECKING:
    from faststream import FastStream

log = logging.getLogger(__name__)

Publish = Callable[[Message], Awaitable[None]]


class _FastStreamDelivery:
    """A FastStream message seen as a sagamesh :class:`Delivery` (for ``processor.settle``)."""

    __slots__ = ("_binding", "_raw", "_settled", "attempt", "message", "offset", "partition")

    def __init__(self, binding: Binding, raw: Any, message: Message, attempt: int,
                 partition: int | None, offset: int | None) -> None:
        self._binding = binding
        self._raw = raw
        self._settled = False
        self.message = message
        self.attempt = attempt
        self.partition = partition
        self.offset = offset

    @property
    def settled(self) -> bool:
        return self._settled

    async def ack(self) -> None:
        if not self._settled:
            self._settled = True
            await self._binding.ack(self._raw)

    async def nack(self, delay: float | None = None) -> None:
        if not self._settled:
            self._settled = True
            await self._binding.nack(self._raw, delay)

    async def reject(self) -> None:
        if not self._settled:
            self._settled = True
            await self._binding.reject(self._raw)


@dataclass
class Mount:
    """What :func:`mount` added: its subscribers (one per topic), the processor and the
    dispatcher. ``start()``/``stop()`` run the handlers' lifecycle; they are hooked into the
    app's lifespan when ``mount(..., app=app)`` is given (otherwise ``start`` runs on the first
    message)."""

    router: EventRouter
    config: ConsumerConfig
    processor: MessageProcessor
    dispatcher: PriorityDispatcher
    binding: Binding
    topics: list[str]
    subscribers: list[Any] = field(default_factory=list)
    _started: bool = False
    _lock: asyncio.Lock | None = None

    @property
    def metrics(self) -> ConsumerMetrics:
        return self.processor.metrics

    def get_metrics(self) -> ConsumerMetrics:
        snapshot = self.processor.metrics.snapshot()
        snapshot.buffered = self.dispatcher.pending
        snapshot.in_flight = self.dispatcher.running
        return snapshot

    async def start(self) -> None:
        if self._started:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self._started:
                await self.router.start()
                self._started = True

    async def stop(self) -> None:
        """Wait (up to ``shutdown_timeout``) for running work, then stop the handlers."""
        if not self._started:
            return
        try:
            await asyncio.wait_for(self.dispatcher.wait_idle(),
                                   require_seconds(self.config.shutdown_timeout))
        except TimeoutError:
            log.warning("mounted router: %d deliveries still running at shutdown",
                        self.dispatcher.running)
        self._started = False
        await self.router.stop()


def mount(
    fs_broker: Any,
    router: EventRouter,
    consumer_config: ConsumerConfig | None = None,
    *,
    app: FastStream | None = None,
    tracing: ConsumeTracer | None = None,
    metrics: ConsumeMetricsSink | None = None,
    max_workers: int = 1,
    dlq_publish: Publish | None = None,
    **binding_options: Any,
) -> Mount:
    """Mount ``router`` on a FastStream ``NatsBroker``, ``RabbitBroker`` or ``KafkaBroker``
    (or one of their routers); call it before the broker starts.

    ``consumer_config`` gives the topics, group, ordering, retry policy, DLQ topic,
    idempotency store, ``workers`` and ``shutdown_timeout`` (as for ``EventConsumer``).
    ``max_workers`` is FastStream's delivery concurrency (NATS workers, RabbitMQ prefetch)
    for ``ordering="none"``; with ``ordering="per_saga"`` each subscriber takes one message
    at a time (FastStream may reorder concurrent deliveries before they reach the mount), so
    scale ordered consumption with partitions/instances, not workers. ``dlq_publish``
    replaces the FastStream DLQ publisher (e.g. a sagamesh broker's ``publish``).
    ``binding_options``: ``stream_prefix`` (NATS, default ``SAGAMESH_``) or ``exchange``
    (RabbitMQ, default ``sagamesh``), matching the sagamesh adapters' defaults.
    """
    config = consumer_config or ConsumerConfig()
    binding = binding_for(fs_broker, **binding_options)
    ordered = config.ordering == "per_saga"
    processor = MessageProcessor(
        router, retry=config.retry, dlq_topic=config.dlq_topic,
        idempotency=config.idempotency, broker_name=binding.system, group=config.group,
        tracing=tracing, prometheus=metrics)
    dispatcher = PriorityDispatcher(config.workers, ordered=ordered)
    topics = config.resolve_topics(router)
    mounted = Mount(router, config, processor, dispatcher, binding, topics)
    publish = dlq_publish if dlq_publish is not None else binding.wire_publisher(
        config.dlq_topic, title=f"sagamesh-dlq:{config.dlq_topic}")
    handler_names = ", ".join(h.handler_id for h in router.handlers) or "none"
    for topic in topics:
        handler = _make_handler(mounted, topic, publish)
        mounted.subscribers.append(binding.subscribe(
            topic, config.group, ordered=ordered,
            max_workers=1 if ordered else max(1, max_workers),
            handler=handler, title=f"sagamesh:{topic}:{config.group}",
            description=f"sagamesh saga events on {topic!r} for group {config.group!r} "
                        f"(handlers: {handler_names})"))
    if app is not None:
        app.on_startup(mounted.start)
        app.on_shutdown(mounted.stop)
    return mounted


def _make_handler(mounted: Mount, topic: str, publish: Publish) -> Callable[..., Any]:
    from faststream import Context

    binding = mounted.binding
    processor = mounted.processor

    async def handle(body: bytes, message: Any = Context("message")) -> None:
        if not mounted._started:
            await mounted.start()
        received, attempt, partition, offset = binding.received(message, topic)
        delivery = _FastStreamDelivery(binding, message, received, attempt, partition, offset)
        try:
            await _process(mounted, processor, delivery, message, publish)
        except asyncio.CancelledError:
            if not delivery.settled:
                await delivery.nack()
            raise
        except Exception:
            log.exception("processing message %s failed unexpectedly; nacked", received.id)
            if not delivery.settled:
                await delivery.nack(processor.retry.delay(delivery.attempt) or None)

    handle.__name__ = f"sagamesh_{topic.replace('.', '_').replace('-', '_')}"
    handle.__doc__ = f"sagamesh EventRouter mounted on {topic!r}."
    return handle


async def _process(mounted: Mount, processor: MessageProcessor, delivery: _FastStreamDelivery,
                   raw: Any, publish: Publish) -> None:
    prepared = processor.prepare(delivery.message, delivery.attempt)
    if isinstance(prepared, Outcome):
        await processor.settle(delivery, prepared, publish)
        return
    dispatcher = mounted.dispatcher
    key = prepared.event.saga_id
    await dispatcher.acquire(key, prepared.priority)
    try:
        while True:
            ctx = processor.context(delivery.message, prepared.attempt,
                                    partition=delivery.partition, offset=delivery.offset)
            outcome = await processor.execute(prepared, ctx)
            if outcome.kind is not OutcomeKind.RETRY:
                break
            # In place: the saga's lane stays held, so no later event of it overtakes.
            processor.metrics.retried += 1
            await mounted.binding.keep_alive(raw)
            if outcome.delay:
                await asyncio.sleep(outcome.delay)
            prepared.attempt += 1
            delivery.attempt = prepared.attempt
        await processor.settle(delivery, outcome, publish)
    finally:
        dispatcher.release(key)
