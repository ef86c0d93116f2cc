"""The dead-letter queue handler: collects what the consumer (or publisher) dead-lettered,
lets an operator list / inspect / recover / purge it, expires it after the policy's TTL and,
when enabled, re-tries it in the background per :class:`DLQRetryPolicy`.

Nothing is lost between the DLQ and recovery: an entry is deleted only after its republish was
confirmed (or its recovery handler succeeded), and only if it did not come back meanwhile. A
recovered message carries ``sagamesh-dlq-recoveries`` and its earlier ``sagamesh-attempts``, so
when it fails again it returns to the DLQ with both counts increased.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .._durations import Duration, require_seconds, seconds
from ..brokers.base import Broker, Delivery, Subscription
from ..errors import DeadLetterNotFoundError, HandlerTimeoutError
from ..events import SagaEvent
from ..message import Headers, Message
from ..publishing import DLQRetryPolicy, ReliabilityConfig
from .context import HandlerContext
from .dlq_store import DeadLetterEntry, DLQStore, MemoryDLQStore
from .handler import SagaEventHandler
from .processor import Decoder, default_decoder

log = logging.getLogger(__name__)

RecoveryHandler = SagaEventHandler | Callable[[SagaEvent, HandlerContext], Awaitable[None]]

_STRIPPED_ON_RECOVERY = (Headers.DLQ_REASON, Headers.DLQ_ERROR, Headers.DLQ_HANDLER)


@dataclass(slots=True)
class DLQConfig:
    """``auto_retry`` republishes entries with fewer than ``retry_policy.max_retries``
    recoveries once they sat ``retry_interval`` in the DLQ; every entry expires ``ttl`` after
    it (last) arrived. ``scan_interval`` (default: derived from the policy) paces both."""

    topic: str = "saga.dlq"
    retry_policy: DLQRetryPolicy = field(default_factory=DLQRetryPolicy)
    store: DLQStore | None = None
    group: str = "sagamesh-dlq"
    auto_retry: bool = False
    scan_interval: Duration | None = None

    @classmethod
    def from_reliability(cls, reliability: ReliabilityConfig, **overrides: Any) -> DLQConfig:
        """The handler of a publisher's dead letters: its ``dlq_topic`` and
        ``dlq_retry_policy`` (``overrides`` set the other fields, e.g. ``auto_retry=True``)."""
        values: dict[str, Any] = {"topic": reliability.dlq_topic,
                                  "retry_policy": reliability.dlq_retry_policy}
        values.update(overrides)
        return cls(**values)

    def interval(self) -> float:
        given = seconds(self.scan_interval)
        if given is not None:
            return max(0.001, given)
        policy = self.retry_policy
        ttl = require_seconds(policy.ttl)
        retry = require_seconds(policy.retry_interval) or ttl
        return min(max(0.01, min(retry, ttl) / 4), 30.0)


@dataclass(slots=True)
class DLQMetrics:
    received: int = 0
    recovered: int = 0
    recovery_failures: int = 0
    auto_retries: int = 0
    expired: int = 0
    purged: int = 0
    size: int = 0


@dataclass(frozen=True, slots=True)
class RecoveryResult:
    message_id: str
    recovered: bool
    target: str  # the topic republished to, or the handler id
    error: BaseException | None = None


class DeadLetterQueueHandler:
    def __init__(self, broker: Broker, config: DLQConfig | None = None, *,
                 decoder: Decoder | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.broker = broker
        self.config = config or DLQConfig()
        self.store: DLQStore = self.config.store if self.config.store is not None \
            else MemoryDLQStore()
        self.metrics = DLQMetrics()
        self._decoder = decoder
        self._clock = clock
        self._subscription: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._locks: dict[str, asyncio.Lock] = {}

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Subscribe to the DLQ topic and start the background expiry / auto-retry task."""
        if self._subscription is not None:
            return
        self._subscription = await self.broker.subscribe(
            self.config.topic, self._on_delivery, group=self.config.group, max_in_flight=64)
        self._task = asyncio.create_task(self._background(), name="sagamesh-dlq")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        sub, self._subscription = self._subscription, None
        if sub is not None:
            await sub.close()

    async def __aenter__(self) -> DeadLetterQueueHandler:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _on_delivery(self, delivery: Delivery) -> None:
        await self.add(delivery.message)
        await delivery.ack()

    async def add(self, message: Message) -> DeadLetterEntry:
        """Store a dead-lettered message (what the DLQ subscription does for each arrival)."""
        entry = await self.store.put(DeadLetterEntry(message, self._clock()))
        self.metrics.received += 1
        return entry

    # -- inspection -----------------------------------------------------------------------
    async def list(self) -> list[DeadLetterEntry]:
        await self.expire()
        return await self.store.list()

    async def get(self, message_id: str) -> DeadLetterEntry:
        entry = await self.store.get(message_id)
        if entry is None or self._expired(entry, self._clock()):
            raise DeadLetterNotFoundError(message_id)
        return entry

    def get_metrics(self) -> DLQMetrics:
        return replace(self.metrics)

    async def size(self) -> int:
        return len(await self.store.list())

    # -- recovery -------------------------------------------------------------------------
    async def recover(self, message_id: str,
                      handler: RecoveryHandler | None = None) -> RecoveryResult:
        """Republish to the original topic (default), or run ``handler`` on the event.

        Raises :class:`DeadLetterNotFoundError` for an unknown id and propagates a failed
        republish (the entry stays). A failing ``handler`` leaves the entry in the DLQ with
        attempts and recoveries increased and returns ``recovered=False``.
        """
        lock = self._locks.setdefault(message_id, asyncio.Lock())
        try:
            async with lock:
                entry = await self.get(message_id)
                if handler is None:
                    return await self._republish(entry)
                return await self._run_handler(entry, handler)
        finally:
            if not lock.locked() and not getattr(lock, "_waiters", None):
                self._locks.pop(message_id, None)

    def recovery_message(self, entry: DeadLetterEntry) -> Message:
        """The message republished for ``entry``: original topic, DLQ reason headers removed,
        attempts kept, recoveries + 1."""
        headers = {k: v for k, v in entry.message.headers.items()
                   if k not in _STRIPPED_ON_RECOVERY}
        headers[Headers.DLQ_RECOVERIES] = str(entry.recoveries + 1)
        headers.setdefault(Headers.ATTEMPTS, "0")
        return Message(id=entry.message.id, topic=entry.original_topic, key=entry.message.key,
                       headers=headers, body=entry.message.body)

    async def _republish(self, entry: DeadLetterEntry) -> RecoveryResult:
        message = self.recovery_message(entry)
        await self.broker.publish(message)
        await self.store.delete(entry.id, version=entry.version)
        self.metrics.recovered += 1
        return RecoveryResult(entry.id, True, message.topic)

    async def _run_handler(self, entry: DeadLetterEntry,
                           handler: RecoveryHandler) -> RecoveryResult:
        message = self.recovery_message(entry)
        target = handler.handler_id if isinstance(handler, SagaEventHandler) \
            else getattr(handler, "__qualname__", repr(handler))
        ctx = HandlerContext(message_id=message.id, topic=message.topic,
                             attempt=entry.attempts + 1, headers=message.headers,
                             broker=getattr(self.broker, "name", ""), group=None)
        try:
            if self._decoder is None:
                self._decoder = default_decoder()
            event = self._decoder(message)
            if isinstance(handler, SagaEventHandler):
                timeout = seconds(handler.config.processing_timeout)
                try:
                    async with asyncio.timeout(timeout):
                        await handler.handle_saga_event(event, ctx)
                except TimeoutError as exc:
                    raise HandlerTimeoutError(f"recovery handler {target!r} exceeded "
                                              f"{timeout}s") from exc
            else:
                await handler(event, ctx)
        except Exception as exc:
            self.metrics.recovery_failures += 1
            headers = dict(entry.message.headers)
            headers[Headers.ATTEMPTS] = str(entry.attempts + 1)
            headers[Headers.DLQ_RECOVERIES] = str(entry.recoveries + 1)
            headers[Headers.DLQ_REASON] = f"recovery_failed: {type(exc).__name__}: {exc}"[:1000]
            headers[Headers.DLQ_ERROR] = type(exc).__name__
            headers[Headers.DLQ_HANDLER] = target
            failed = Message(id=entry.message.id, topic=entry.message.topic,
                             key=entry.message.key, headers=headers, body=entry.message.body)
            await self.store.put(DeadLetterEntry(failed, self._clock()))
            return RecoveryResult(entry.id, False, target, exc)
        await self.store.delete(entry.id, version=entry.version)
        self.metrics.recovered += 1
        return RecoveryResult(entry.id, True, target)

    # -- housekeeping ---------------------------------------------------------------------
    async def purge(self, older_than: Duration | None = None) -> int:
        """Delete every entry (or those that arrived more than ``older_than`` ago)."""
        limit = seconds(older_than)
        cutoff = None if limit is None else self._clock() - limit
        count = 0
        for entry in await self.store.list():
            if (cutoff is None or entry.received_at < cutoff) and \
                    await self.store.delete(entry.id, version=entry.version):
                count += 1
        self.metrics.purged += count
        return count

    def _expired(self, entry: DeadLetterEntry, now: float) -> bool:
        return now - entry.received_at >= require_seconds(self.config.retry_policy.ttl)

    async def expire(self) -> int:
        """Delete entries older than the policy's TTL; returns how many."""
        now = self._clock()
        count = 0
        for entry in await self.store.list():
            if self._expired(entry, now) and \
                    await self.store.delete(entry.id, version=entry.version):
                count += 1
        self.metrics.expired += count
        return count

    async def retry_due(self) -> int:
        """Republish every entry due for an automatic retry; returns how many were sent."""
        policy = self.config.retry_policy
        interval = require_seconds(policy.retry_interval)
        now = self._clock()
        sent = 0
        for entry in await self.store.list():
            if entry.recoveries >= policy.max_retries or now - entry.received_at < interval:
                continue
            lock = self._locks.get(entry.id)
            if lock is not None and lock.locked():
                continue
            try:
                result = await self.recover(entry.id)
            except DeadLetterNotFoundError:
                continue
            except Exception:
                log.exception("automatic DLQ retry of %s failed; will try again", entry.id)
                continue
            if result.recovered:
                sent += 1
        self.metrics.auto_retries += sent
        return sent

    async def _background(self) -> None:
        interval = self.config.interval()
        while True:
            await asyncio.sleep(interval)
            try:
                await self.expire()
                if self.config.auto_retry:
                    await self.retry_due()
                self.metrics.size = len(await self.store.list())
            except Exception:
                log.exception("DLQ housekeeping failed; continuing")
