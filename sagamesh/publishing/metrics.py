"""Publisher and reliability counters: plain attributes bumped on the hot path, read by users.

``get_metrics()``/``get_reliability_metrics()`` return snapshots (copies), so a caller can keep
one and compare it with a later one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace


@dataclass(slots=True)
class PublisherMetrics:
    """``average_latency`` is seconds per publish operation (one event, one batch or one
    transaction commit); ``average_batch_size`` is events per ``publish_batch`` call."""

    published_count: int = 0
    failed_count: int = 0
    batch_count: int = 0
    batched_events: int = 0
    operations: int = 0
    total_latency: float = 0.0
    started_at: float = 0.0
    observed_at: float = 0.0
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)

    @property
    def average_latency(self) -> float:
        return self.total_latency / self.operations if self.operations else 0.0

    @property
    def average_batch_size(self) -> float:
        return self.batched_events / self.batch_count if self.batch_count else 0.0

    def publish_rate(self) -> float:
        """Events confirmed per second since the publisher was created."""
        elapsed = (self.observed_at or self.clock()) - self.started_at
        return self.published_count / elapsed if elapsed > 0 else 0.0

    def snapshot(self) -> PublisherMetrics:
        return replace(self, observed_at=self.clock())


@dataclass(slots=True)
class ReliabilityMetrics:
    """Retries are counted per message: a batch where 3 messages are re-tried once counts 3.

    ``total_retries == successful_retries + failed_retries``; ``success_rate()`` is the share of
    messages that reached their topic, ``retry_success_rate()`` the share of re-tries that did.
    """

    total_retries: int = 0
    successful_retries: int = 0
    failed_retries: int = 0
    dlq_messages_count: int = 0
    succeeded_messages: int = 0
    failed_messages: int = 0
    timeouts: int = 0

    def success_rate(self) -> float:
        total = self.succeeded_messages + self.failed_messages
        return self.succeeded_messages / total if total else 1.0

    def retry_success_rate(self) -> float:
        return self.successful_retries / self.total_retries if self.total_retries else 1.0

    def snapshot(self) -> ReliabilityMetrics:
        return replace(self)
