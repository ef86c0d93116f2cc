"""Coordinator settings and the metrics it reports."""

from __future__ import annotations

from dataclasses import dataclass

from .._durations import Duration, require_seconds
from ..errors import ConfigError


@dataclass(frozen=True, slots=True)
class ConcurrencyConfig:
    """``max_concurrent_sagas``: sagas admitted at once (a semaphore; ``start_saga`` waits up to
    ``acquire_timeout`` for a slot, then raises ``CoordinatorSaturatedError``).
    ``worker_pool_size``: sagas executing a step at the same moment.
    ``shutdown_timeout``: how long ``close()`` lets running sagas finish before cancelling them.
    """

    max_concurrent_sagas: int = 100
    worker_pool_size: int = 20
    acquire_timeout: Duration = 5.0
    shutdown_timeout: Duration = 30.0

    def __post_init__(self) -> None:
        for name in ("max_concurrent_sagas", "worker_pool_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"must be a positive integer, got {value!r}", field=name)
        for name in ("acquire_timeout", "shutdown_timeout"):
            value = getattr(self, name)
            try:
                number = require_seconds(value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"must be seconds, got {value!r}", field=name) from exc
            if number < 0:
                raise ConfigError(f"must not be negative, got {value!r}", field=name)


@dataclass(frozen=True, slots=True)
class CoordinatorMetrics:
    """A snapshot of what this coordinator did since it was created (durations in seconds)."""

    total_sagas: int = 0
    active_sagas: int = 0
    completed_sagas: int = 0
    failed_sagas: int = 0
    compensated_sagas: int = 0
    cancelled_sagas: int = 0
    timed_out_sagas: int = 0
    average_saga_duration: float = 0.0
    steps_executed: int = 0
    step_retries: int = 0
    compensations_run: int = 0
    recovered_sagas: int = 0
    lost_leases: int = 0
    events_published: int = 0
    event_publish_failures: int = 0


@dataclass(frozen=True, slots=True)
class CoordinatorHealth:
    healthy: bool
    detail: str = ""
    active_sagas: int = 0
    storage_latency: float | None = None
