"""The transactional outbox: how transactions work on brokers without native ones.

A commit stores all messages of a transaction in the outbox at once (all or none); a relay
then publishes stored messages to the broker in order, with retries, and marks them sent.
Consumers therefore see nothing before the commit and nothing of a rolled-back transaction;
delivery is at-least-once (a crash between publish and ``mark_sent`` re-sends), so consumers
dedupe by event id (the message id).

:class:`Outbox` is the whole contract a store must meet; :class:`MemoryOutbox` is the
in-process one, and a PostgreSQL one (sagamesh.outbox) lets the messages commit in the same
database transaction as the user's own writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..brokers.base import Broker
from ..errors import TransactionError
from ..message import Message
from ..retry import ExponentialBackoffRetryPolicy, RetryPolicy

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """One stored message. ``id`` grows with insertion order; the relay publishes by it."""

    id: int
    tx_id: str
    message: Message


@runtime_checkable
class Outbox(Protocol):
    """Storage for committed-but-unpublished messages.

    ``add`` stores every message of ``tx_id`` or none of them (and raises). ``pending`` returns
    up to ``limit`` unsent records, oldest first (a shared store may claim them for this relay).
    ``mark_sent`` records that those ids reached the broker; they are never returned again.
    Optional: ``on_notify(callback)``: the store calls ``callback()`` when rows were added
    elsewhere (e.g. by another process), so the relay need not wait for its next poll.
    """

    async def add(self, tx_id: str, messages: Sequence[Message]) -> None: ...

    async def pending(self, limit: int) -> Sequence[OutboxRecord]: ...

    async def mark_sent(self, ids: Sequence[int]) -> None: ...


class MemoryOutbox:
    """In-process outbox: survives broker outages, not process crashes (use a durable one)."""

    def __init__(self) -> None:
        self._records: dict[int, OutboxRecord] = {}
        self._ids = itertools.count(1)
        self.added = 0
        self.sent = 0

    def __len__(self) -> int:
        return len(self._records)

    async def add(self, tx_id: str, messages: Sequence[Message]) -> None:
        bad = [m for m in messages if not isinstance(m, Message)]
        if bad:
            raise TransactionError(f"outbox takes Message objects, got {type(bad[0]).__name__}")
        # No await between the first and the last insert: all or none, never interleaved.
        for message in messages:
            record = OutboxRecord(next(self._ids), tx_id, message)
            self._records[record.id] = record
        self.added += len(messages)

    async def pending(self, limit: int) -> Sequence[OutboxRecord]:
        return list(itertools.islice(self._records.values(), limit))

    async def mark_sent(self, ids: Sequence[int]) -> None:
        for record_id in ids:
            if self._records.pop(record_id, None) is not None:
                self.sent += 1


class OutboxRelay:
    """Publishes an outbox's records to a broker, in order per key, until closed.

    Records go out in "waves": each wave holds at most the oldest pending record of each key
    and is pipelined with ``publish_many``, so different sagas are sent together while the
    messages of one saga leave strictly one after another. A failed record blocks the rest of
    its key for that round (order is kept) and the round is re-tried after a backoff.
    """

    def __init__(
        self,
        outbox: Outbox,
        broker: Broker,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        retry_policy: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.outbox = outbox
        self.broker = broker
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.retry_policy = retry_policy or ExponentialBackoffRetryPolicy(
            max_attempts=1_000_000, base_delay=0.05, max_delay=5.0)
        self._sleep = sleep
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.sent = 0
        self.failed_attempts = 0
        self.rounds = 0
        hook = getattr(outbox, "on_notify", None)
        if callable(hook):  # optional: stores that learn of new rows (LISTEN/NOTIFY) wake us
            hook(self.notify)

    def start(self) -> None:
        """Start the owned background task (idempotent; needs a running loop)."""
        if self._closed:
            raise RuntimeError("outbox relay is closed")
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(),
                                                                name="sagamesh-outbox-relay")

    def notify(self) -> None:
        """New records were added: publish them now rather than at the next poll."""
        self._wake.set()

    async def run_once(self) -> tuple[int, int]:
        """Publish one round of pending records; returns (sent, failed)."""
        records = await self.outbox.pending(self.batch_size)
        self.rounds += 1
        sent = failed = 0
        blocked: set[Hashable] = set()
        remaining = list(records)
        while remaining:
            wave: list[OutboxRecord] = []
            later: list[OutboxRecord] = []
            seen: set[Hashable] = set()
            for record in remaining:
                key = record.message.key
                if key in blocked:
                    continue
                if key in seen:
                    later.append(record)
                else:
                    seen.add(key)
                    wave.append(record)
            if not wave:
                break
            try:
                results: Sequence[BaseException | None] = await self.broker.publish_many(
                    [r.message for r in wave])
            except Exception as exc:
                results = [exc] * len(wave)
            done = []
            for record, result in zip(wave, results, strict=True):
                if result is None:
                    done.append(record.id)
                else:
                    failed += 1
                    blocked.add(record.message.key)
                    log.warning("outbox relay: %s to %s failed: %r", record.message.id,
                                record.message.topic, result)
            if done:
                await self.outbox.mark_sent(done)
                sent += len(done)
            remaining = later
        self.sent += sent
        self.failed_attempts += failed
        return sent, failed

    async def _run(self) -> None:
        failures = 0
        while True:
            self._wake.clear()
            try:
                sent, failed = await self.run_once()
            except Exception:
                log.exception("outbox relay round failed")
                sent, failed = 0, 1
            if failed:
                failures += 1
                await self._sleep(self.retry_policy.delay(failures))
                continue
            failures = 0
            if sent:
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval):
                    await self._wake.wait()

    async def drain(self, within: float) -> int:
        """Publish until nothing is pending or ``within`` seconds pass; returns records left."""
        deadline = time.monotonic() + within
        failures = 0
        while True:
            left = len(await self.outbox.pending(1))
            if not left:
                return 0
            if time.monotonic() >= deadline:
                return len(await self.outbox.pending(self.batch_size))
            try:
                _, failed = await self.run_once()
            except Exception:
                log.exception("outbox relay round failed while draining")
                failed = 1
            if failed:
                failures += 1
                delay = min(self.retry_policy.delay(failures), deadline - time.monotonic())
                if delay > 0:
                    await self._sleep(delay)

    async def close(self, *, drain: bool = True, drain_within: float = 30.0) -> None:
        """Stop the background task; with ``drain``, first publish what is pending.

        A relay that was never started touches nothing (a durable store is not even opened).
        """
        if self._closed:
            return
        self._closed = True
        task, self._task = self._task, None
        if task is None:  # never started: nothing was added through this relay
            return
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if drain:
            left = await self.drain(drain_within)
            if left:
                log.warning("outbox relay closed with %d record(s) still unsent", left)
