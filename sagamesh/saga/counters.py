"""What a coordinator counts, kept as plain integers bumped inline (one loop, no locks) and
turned into :class:`CoordinatorMetrics` only when asked."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from .config import CoordinatorMetrics
from .state import SagaState


@dataclass(slots=True)
class Counters:
    total: int = 0
    completed: int = 0
    compensated: int = 0
    failed: int = 0
    cancelled: int = 0
    timed_out: int = 0
    ended: int = 0
    duration_sum: float = 0.0
    steps: int = 0
    retries: int = 0
    compensations: int = 0
    recovered: int = 0
    lost: int = 0
    events: int = 0
    publish_failures: int = 0

    def finished(self, state: SagaState, elapsed: timedelta) -> None:
        self.ended += 1
        self.duration_sum += elapsed.total_seconds()
        if state is SagaState.COMPLETED:
            self.completed += 1
        elif state is SagaState.COMPENSATED:
            self.compensated += 1
        elif state is SagaState.FAILED:
            self.failed += 1
        elif state is SagaState.CANCELLED:
            self.cancelled += 1
        elif state is SagaState.TIMED_OUT:
            self.timed_out += 1

    def snapshot(self, active: int) -> CoordinatorMetrics:
        return CoordinatorMetrics(
            total_sagas=self.total,
            active_sagas=active,
            completed_sagas=self.completed,
            failed_sagas=self.failed,
            compensated_sagas=self.compensated,
            cancelled_sagas=self.cancelled,
            timed_out_sagas=self.timed_out,
            average_saga_duration=self.duration_sum / self.ended if self.ended else 0.0,
            steps_executed=self.steps,
            step_retries=self.retries,
            compensations_run=self.compensations,
            recovered_sagas=self.recovered,
            lost_leases=self.lost,
            events_published=self.events,
            event_publish_failures=self.publish_failures,
        )
