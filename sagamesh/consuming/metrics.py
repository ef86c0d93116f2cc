"""Counters of the consume side. Plain objects updated inline: no locks are needed on one loop."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(slots=True)
class HandlerMetrics:
    """Per handler; times are seconds. A timed-out or raising run counts as failed."""

    total_processed: int = 0
    successful_count: int = 0
    failed_count: int = 0
    timeout_count: int = 0
    total_processing_time: float = 0.0
    max_processing_time: float = 0.0

    @property
    def average_processing_time(self) -> float:
        return self.total_processing_time / self.total_processed if self.total_processed else 0.0

    def record(self, duration: float, *, ok: bool, timed_out: bool = False) -> None:
        self.total_processed += 1
        if ok:
            self.successful_count += 1
        else:
            self.failed_count += 1
            if timed_out:
                self.timeout_count += 1
        self.total_processing_time += duration
        if duration > self.max_processing_time:
            self.max_processing_time = duration

    def snapshot(self) -> HandlerMetrics:
        return replace(self)


@dataclass(slots=True)
class ConsumerMetrics:
    """Per consumer (or per :class:`MessageProcessor` when used on its own).

    ``received`` counts deliveries (redeliveries included); the outcome counters add up to the
    deliveries that were settled.
    """

    received: int = 0
    acked: int = 0
    retried: int = 0
    dead_lettered: int = 0
    discarded: int = 0
    duplicates: int = 0
    decode_errors: int = 0
    unrouted: int = 0
    handler_failures: int = 0
    dlq_publish_failures: int = 0
    in_flight: int = 0
    buffered: int = 0
    max_buffered: int = 0
    max_concurrent: int = 0

    def snapshot(self) -> ConsumerMetrics:
        return replace(self)
