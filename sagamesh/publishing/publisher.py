"""``SagaEventPublisher``: the public face of the publish pipeline.

It owns the pipeline (serialize → user stages → reliability → batch → transaction → broker),
the metrics, the tasks of ``publish_batch_async`` and the outbox relay; ``close()`` waits for
all of them. It does not own the broker: connect and close that yourself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from .._durations import require_seconds
from ..brokers.base import Broker
from ..errors import (
    BatchPublishError,
    ConfigError,
    PublisherClosedError,
    SagameshError,
    TransactionError,
)
from ..events import SagaEvent
from ..message import Message
from ..serialization import Serializer, get_serializer
from .config import PublisherConfig
from .metrics import PublisherMetrics, ReliabilityMetrics
from .outbox import MemoryOutbox, OutboxRelay
from .results import BatchPublishResult
from .stage import CallNext, Publication, PublishStage, compose, stage_name
from .stages import BatchStage, BrokerSink, ReliabilityStage, SerializeStage, TransactionStage
from .stages.reliability import Sleep
from .transaction import PublisherTransaction

log = logging.getLogger(__name__)

T = TypeVar("T")

_OPEN, _CLOSING, _CLOSED = 0, 1, 2
BUILTIN_STAGES = ("serialize", "reliability", "batch", "transaction")


def _resolve_serializer(value: str | Serializer) -> Serializer:
    if not isinstance(value, str):
        return value
    try:
        return get_serializer(value)
    except ConfigError:
        raise
    except (SagameshError, LookupError, ValueError) as exc:
        raise ConfigError(f"unknown serializer {value!r}", field="serializer") from exc


class SagaEventPublisher:
    """Publishes saga events to a broker with retries, DLQ, batching and transactions."""

    def __init__(
        self,
        broker: Broker,
        config: PublisherConfig | None = None,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        config = config if config is not None else PublisherConfig()
        self.broker = broker
        self.config = config
        self._clock = clock
        self._metrics = PublisherMetrics(started_at=clock(), clock=clock)
        self._reliability_metrics = ReliabilityMetrics()

        # A given outbox is always used. Otherwise native transactions or an in-memory outbox
        # is chosen at the first commit: a broker may learn its capabilities only on connect
        # (Kafka probes for transactional producers), after this publisher was built.
        relay = OutboxRelay(config.outbox, broker, sleep=sleep) \
            if config.outbox is not None else None

        self._serialize = SerializeStage(_resolve_serializer(config.serializer),
                                         config.topic_prefix, config.topic_strategy)
        reliability = ReliabilityStage(
            config.retry_policy(),
            attempt_timeout=require_seconds(config.timeout),
            confirm_deadline=config.confirm_deadline(),
            dlq_topic=config.dlq_topic(),
            metrics=self._reliability_metrics,
            sleep=sleep,
            clock=clock,
        )
        self._transaction = TransactionStage(
            broker, relay, fallback=lambda: OutboxRelay(MemoryOutbox(), broker, sleep=sleep))
        self._stages: list[PublishStage] = [
            self._serialize,
            *config.stages,
            reliability,
            BatchStage(config.batch_size),
            self._transaction,
        ]
        self._sink = BrokerSink(broker)
        self._pipeline: CallNext = compose(self._stages, self._sink)

        self._tasks: set[asyncio.Task[BatchPublishResult]] = set()
        self._transactions: set[str] = set()
        self._inflight = 0
        self._idle = asyncio.Event()
        self._state = _OPEN
        self._closed_event: asyncio.Event | None = None

    # -- pipeline ----------------------------------------------------------------------------
    @property
    def stages(self) -> tuple[str, ...]:
        """Stage names in the order a publication passes them."""
        return tuple(stage_name(s) for s in self._stages)

    def add_stage(self, stage: PublishStage, *, before: str | None = None,
                  after: str | None = None) -> None:
        """Insert ``stage`` before or after a named one (default: before ``reliability``)."""
        if before is not None and after is not None:
            raise ConfigError("give either before= or after=, not both", field="stages")
        if not callable(stage):
            raise ConfigError(f"{stage!r} is not a stage", field="stages")
        names = self.stages
        anchor = before if before is not None else after
        if anchor is None:
            anchor, before = "reliability", "reliability"
        if anchor not in names:
            raise ConfigError(f"no stage named {anchor!r} (stages: {', '.join(names)})",
                              field="stages")
        index = names.index(anchor) + (0 if before is not None else 1)
        if index == 0:
            raise ConfigError("a stage cannot run before 'serialize'", field="stages")
        self._stages.insert(index, stage)
        self._pipeline = compose(self._stages, self._sink)

    def topic_for(self, event: SagaEvent) -> str:
        return self._serialize.topic_for(event)

    def _encode(self, event: SagaEvent) -> Message:
        return self._serialize.encode(event)

    # -- lifecycle bookkeeping ------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._state != _OPEN:
            raise PublisherClosedError("the publisher is closed")

    def _done(self) -> None:
        self._inflight -= 1
        if self._state and not self._inflight:
            self._idle.set()

    # -- single ----------------------------------------------------------------------------------
    async def publish_saga_event(self, event: SagaEvent) -> None:
        """Publish one event; returns once the broker confirmed it (or it was dead-lettered).

        Raises InvalidEventError/SerializationError for bad input (never re-tried), else the
        last error (PublishTimeoutError, BrokerUnavailableError, ...) when retries ran out and
        no DLQ is configured.
        """
        if self._state:
            raise PublisherClosedError("the publisher is closed")
        metrics = self._metrics
        pub = Publication((event,))
        self._inflight += 1
        started = self._clock()
        try:
            await self._pipeline(pub)
        except BaseException:
            metrics.failed_count += 1
            raise
        finally:
            self._done()
        metrics.operations += 1
        metrics.total_latency += self._clock() - started
        results = pub.results  # empty only when a user stage short-circuited without news
        error = results[0] if results else None
        if error is None:
            metrics.published_count += 1
            return
        metrics.failed_count += 1
        if not pub.dead_lettered:
            raise error

    # -- batches ---------------------------------------------------------------------------------
    async def publish_batch(self, events: Iterable[SagaEvent]) -> BatchPublishResult:
        """Publish pipelined; returns once every event is confirmed (or dead-lettered).

        Bad input refuses the whole batch before anything is sent. When events are lost (not
        confirmed, not dead-lettered) raises BatchPublishError naming exactly those ids; only
        failed events were re-tried.
        """
        self._check_open()
        result = await self._run_batch(list(events))
        if result.error is not None:
            raise result.error
        return result

    def publish_batch_async(self, events: Iterable[SagaEvent]) -> asyncio.Task[BatchPublishResult]:
        """Start a batch publish and return its task at once; the task never raises (the
        outcome, failures included, is in the BatchPublishResult). close() awaits it."""
        self._check_open()
        task = asyncio.get_running_loop().create_task(self._batch_result(list(events)),
                                                      name="sagamesh-publish-batch")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _batch_result(self, events: list[SagaEvent]) -> BatchPublishResult:
        started = self._clock()
        try:
            return await self._run_batch(events)
        except Exception as exc:
            return BatchPublishResult(0, len(events), self._clock() - started, exc,
                                      [getattr(e, "id", "") for e in events])

    async def _run_batch(self, events: Sequence[SagaEvent]) -> BatchPublishResult:
        metrics = self._metrics
        total = len(events)
        started = self._clock()
        if not total:
            return BatchPublishResult(0, 0, 0.0)
        pub = Publication(events)
        self._inflight += 1
        try:
            await self._pipeline(pub)
        except BaseException:
            metrics.failed_count += total
            raise
        finally:
            self._done()
        duration = self._clock() - started
        failures: dict[str, BaseException] = {}
        failed_ids: list[str] = []
        parked: list[str] = []
        dead = pub.dead_lettered
        for index, error in enumerate(pub.results):
            if error is not None:
                event_id = events[index].id
                failed_ids.append(event_id)
                if index in dead:
                    parked.append(event_id)
                else:
                    failures[event_id] = error
        published = total - len(failed_ids)
        metrics.published_count += published
        metrics.failed_count += len(failed_ids)
        metrics.batch_count += 1
        metrics.batched_events += total
        metrics.operations += 1
        metrics.total_latency += duration
        error = BatchPublishError(failures, total) if failures else None
        return BatchPublishResult(published, len(failed_ids), duration, error, failed_ids,
                                  parked)

    # -- transactions ------------------------------------------------------------------------------
    def transaction(self, tx_id: str) -> PublisherTransaction:
        """``async with publisher.transaction("tx-1") as tx: await tx.publish_event(e)``."""
        if not isinstance(tx_id, str) or not tx_id:
            raise TransactionError("a transaction needs a non-empty id")
        return PublisherTransaction(self, tx_id)

    async def with_transaction(
        self, tx_id: str, fn: Callable[[PublisherTransaction], Awaitable[T]]
    ) -> T:
        """Run ``fn(tx)``; commit when it returns, roll back when it raises (and re-raise)."""
        async with self.transaction(tx_id) as tx:
            return await fn(tx)

    async def publish_with_transaction(self, event: SagaEvent) -> None:
        """Publish one event through the transaction path (outbox on non-transactional
        brokers: stored durably first, then relayed)."""
        async with self.transaction(f"tx-{event.id}") as tx:
            await tx.publish_event(event)

    def _begin_transaction(self, tx_id: str) -> None:
        self._check_open()
        if tx_id in self._transactions:
            raise TransactionError(f"transaction {tx_id!r} is already open")
        self._transactions.add(tx_id)
        self._inflight += 1

    def _end_transaction(self, tx_id: str) -> None:
        if tx_id in self._transactions:
            self._transactions.discard(tx_id)
            self._done()

    async def _commit(self, tx_id: str, events: Sequence[SagaEvent],
                      messages: Sequence[Message]) -> None:
        if not messages:
            return
        metrics = self._metrics
        pub = Publication(list(events), list(messages), transaction=tx_id)
        started = self._clock()
        try:
            await self._pipeline(pub)
        except Exception as exc:
            metrics.failed_count += len(messages)
            raise TransactionError(f"transaction {tx_id!r} failed; nothing was published: "
                                   f"{exc}") from exc
        metrics.operations += 1
        metrics.total_latency += self._clock() - started
        errors = [r for r in pub.results if r is not None]
        if errors:
            metrics.failed_count += len(messages)
            raise TransactionError(f"transaction {tx_id!r} failed; nothing was published: "
                                   f"{errors[0]}") from errors[0]
        metrics.published_count += len(messages)

    # -- metrics -----------------------------------------------------------------------------------
    def get_metrics(self) -> PublisherMetrics:
        return self._metrics.snapshot()

    def get_reliability_metrics(self) -> ReliabilityMetrics:
        return self._reliability_metrics.snapshot()

    @property
    def outbox_relay(self) -> OutboxRelay | None:
        """The relay used for transactions when the broker has no native ones (None until the
        first commit found none, unless ``PublisherConfig.outbox`` was given)."""
        return self._transaction.relay

    # -- close -------------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._state != _OPEN

    async def close(self) -> None:
        """Wait for in-flight publishes, open transactions and async batches, drain the outbox,
        then refuse further use with PublisherClosedError. Idempotent; bounded by
        ``close_timeout`` (what is still running then is cancelled and logged)."""
        if self._state == _CLOSED:
            return
        if self._state == _CLOSING:
            assert self._closed_event is not None
            await self._closed_event.wait()
            return
        self._state = _CLOSING
        self._closed_event = asyncio.Event()
        deadline = asyncio.get_running_loop().time() + require_seconds(self.config.close_timeout)
        try:
            async with asyncio.timeout_at(deadline):
                while self._inflight or self._tasks:
                    if self._tasks:
                        await asyncio.gather(*self._tasks, return_exceptions=True)
                    if self._inflight:
                        self._idle.clear()
                        await self._idle.wait()
        except TimeoutError:
            log.warning("publisher close: %d publish(es) and %d batch task(s) still running "
                        "after close_timeout; cancelling", self._inflight, len(self._tasks))
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            try:
                relay = self._transaction.relay
                if relay is not None:
                    left = deadline - asyncio.get_running_loop().time()
                    await relay.close(drain=True, drain_within=max(left, 0.0))
            finally:
                self._state = _CLOSED
                self._closed_event.set()

    async def start(self) -> None:
        """Start the outbox relay now, so records a previous process left in a durable outbox
        are published without waiting for the next transaction (``async with`` does this)."""
        self._check_open()
        relay = self._transaction.relay
        if relay is not None:
            relay.start()

    async def __aenter__(self) -> SagaEventPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
