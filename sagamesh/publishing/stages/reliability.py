"""Retries with backoff, per-attempt timeout, an overall confirm deadline, then the DLQ.

Only the messages that failed are re-tried. The backoff comes from :mod:`sagamesh.retry`
(exponential with jitter, capped), never from here. A transaction commit is re-tried as a
whole (it is all-or-nothing) and never dead-lettered: its failure is the caller's to handle.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from ..._eager import DONE, DeadlineQueue, finish_by, finish_within, step
from ...dlq_message import dead_letter
from ...errors import InvalidEventError, PublishTimeoutError, SerializationError
from ...retry import RetryPolicy, is_retryable_error
from ..metrics import ReliabilityMetrics
from ..stage import CallNext, Publication

Sleep = Callable[[float], Awaitable[object]]


def is_retryable(error: BaseException) -> bool:
    """Connection losses and timeouts are worth another attempt; bad input never is."""
    verdict = is_retryable_error(error)
    if verdict is not None:
        return verdict
    if isinstance(error, SerializationError | InvalidEventError):
        return False
    return isinstance(error, TimeoutError | ConnectionError)


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


class ReliabilityStage:
    name = "reliability"
    __slots__ = ("_clock", "_deadline", "_dlq_topic", "_first", "_metrics", "_policy", "_sleep",
                 "_timeout")

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        attempt_timeout: float,
        confirm_deadline: float | None,
        dlq_topic: str | None,
        metrics: ReliabilityMetrics,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._policy = policy
        self._timeout = attempt_timeout
        self._deadline = confirm_deadline
        self._dlq_topic = dlq_topic
        self._metrics = metrics
        self._sleep = sleep
        self._clock = clock
        # Every first attempt gets the same limit, so their deadlines share one timer.
        first = attempt_timeout
        if confirm_deadline is not None and confirm_deadline < first:
            first = confirm_deadline
        self._first = DeadlineQueue(first)

    async def _attempt(self, pub: Publication, call_next: CallNext, limit: float) -> None:
        """One attempt; afterwards ``pub.results`` holds one entry per message."""
        try:
            rest = step(call_next(pub))
        except Exception as exc:
            pub.results = [exc] * len(pub.messages)
            return
        if rest is DONE:
            if len(pub.results) != len(pub.messages):  # a stage swallowed the call: no news
                pub.results = [None] * len(pub.messages)
            return
        # The attempt had to wait: the rest runs under the per-attempt timeout, armed only now
        # (attempts that never wait cost no timer).
        try:
            expired = await finish_within(rest, limit)
        except Exception as exc:
            pub.results = [exc] * len(pub.messages)
            return
        self._waited(pub, expired, limit)

    def _waited(self, pub: Publication, expired: bool, limit: float) -> None:
        """Results of an attempt that had to wait and finished (``expired``: by its timeout)."""
        if expired:
            self._metrics.timeouts += 1
            error = PublishTimeoutError(f"not confirmed within {limit:g}s")
            pub.results = [error] * len(pub.messages)
        elif len(pub.results) != len(pub.messages):
            pub.results = [None] * len(pub.messages)

    async def __call__(self, pub: Publication, call_next: CallNext) -> None:
        started = self._clock()
        # Fast path: an attempt that completes without waiting needs no timer and no copy.
        try:
            rest = step(call_next(pub))
        except Exception as exc:
            pub.results = [exc] * len(pub.messages)
        else:
            if rest is DONE:
                results = pub.results
                if len(results) == len(pub.messages) and not any(results):
                    self._metrics.succeeded_messages += len(results)
                    return
                if len(results) != len(pub.messages):
                    pub.results = [None] * len(pub.messages)
                    self._metrics.succeeded_messages += len(pub.messages)
                    return
            else:
                first = self._first
                try:  # awaited here, not in a helper: every confirmed publish resumes this way
                    expired = await finish_by(rest, first)
                except Exception as exc:
                    pub.results = [exc] * len(pub.messages)
                else:
                    self._waited(pub, expired, first.limit)
                if not any(pub.results):
                    self._metrics.succeeded_messages += len(pub.results)
                    return
        await self._recover(pub, call_next, started)

    async def _recover(self, pub: Publication, call_next: CallNext, started: float) -> None:
        metrics = self._metrics
        policy = self._policy
        final: list[BaseException | None] = list(pub.results)
        total = len(final)
        failed_at = datetime.now(UTC)
        attempts = [1] * total
        attempt = 1
        pending = [i for i, r in enumerate(final) if r is not None]
        while pending:
            retry = [i for i in pending if is_retryable(final[i])]  # type: ignore[arg-type]
            if not retry or not policy.should_retry(attempt, final[retry[0]]):
                break
            delay = policy.delay(attempt)
            limit = self._timeout
            if self._deadline is not None:
                remaining = started + self._deadline - self._clock() - delay
                if remaining <= 0:
                    for i in retry:
                        final[i] = PublishTimeoutError(
                            f"not confirmed within confirm_timeout={self._deadline:g}s after "
                            f"{attempts[i]} attempt(s); last error: {_reason(final[i])}")  # type: ignore[arg-type]
                    break
                limit = min(limit, remaining)
            await self._sleep(delay)
            attempt += 1
            sub = pub.subset(retry)
            await self._attempt(sub, call_next, limit)
            metrics.total_retries += len(retry)
            for result, i in zip(sub.results, retry, strict=True):
                attempts[i] = attempt
                final[i] = result
                if result is None:
                    metrics.successful_retries += 1
                else:
                    metrics.failed_retries += 1
            pending = [i for i in pending if final[i] is not None]

        failed = [i for i, r in enumerate(final) if r is not None]
        metrics.succeeded_messages += total - len(failed)
        metrics.failed_messages += len(failed)
        pub.results = final
        if failed and self._dlq_topic is not None and pub.transaction is None:
            await self._dead_letter(pub, call_next, failed, attempts, failed_at)

    async def _dead_letter(self, pub: Publication, call_next: CallNext, failed: list[int],
                           attempts: list[int], failed_at: datetime) -> None:
        assert self._dlq_topic is not None
        final = pub.results
        copies = [
            dead_letter(pub.messages[i], dlq_topic=self._dlq_topic,
                        reason=_reason(final[i]),  # type: ignore[arg-type]
                        attempts=attempts[i], first_failure=failed_at, error=final[i])
            for i in failed
        ]
        dlq = Publication((), copies)
        await self._attempt(dlq, call_next, self._timeout)
        parked = frozenset(i for i, r in zip(failed, dlq.results, strict=True) if r is None)
        self._metrics.dlq_messages_count += len(parked)
        pub.dead_lettered = parked
