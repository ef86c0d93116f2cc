"""The events of saga transitions: gathered on the run while a transition happens and published
once it is stored (or written with it, through the outbox), so an event never runs ahead of the
state it describes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from ..errors import BatchPublishError, SerializationError
from ..events import EventType, SagaError, SagaEvent
from ._run import Run
from .codec import DataCodec
from .counters import Counters
from .plan import PlannedStep
from .publisher import SagaEventSink
from .state import SagaState, utcnow

log = logging.getLogger("sagamesh.saga.coordinator")  # the coordinator's work, under its name

ZERO = timedelta(0)
# plain strings for event fields (an enum's .value is a slow descriptor on the hot path)
PENDING = str(SagaState.PENDING.value)
RUNNING = str(SagaState.RUNNING.value)
COMPLETED = str(SagaState.COMPLETED.value)


class EventEmitter:
    """Emits a coordinator's saga events through ``publisher`` (in batches when it can), or only
    counts them when ``outbox`` is set (the saga write carries them)."""

    def __init__(
        self,
        publisher: SagaEventSink,
        *,
        instance_id: str,
        new_id: Callable[[], str],
        counters: Counters,
        outbox: bool,
    ) -> None:
        self._publisher = publisher
        batch = getattr(publisher, "publish_batch", None)
        self._publish_batch = batch if callable(batch) else None
        self._instance_id = instance_id
        self._new_id = new_id
        self._c = counters
        self._outbox = outbox

    def emit(
        self,
        run: Run,
        type: EventType,
        *,
        step_id: str = "",
        attempt: int = 0,
        max_attempts: int = 0,
        duration: timedelta = ZERO,
        error: SagaError | None = None,
        previous_state: Any = None,
        new_state: Any = None,
        data: Any = None,
        metadata: dict[str, Any] | None = None,
        timestamp: datetime | None = None,
    ) -> None:
        run.pending.append(
            SagaEvent(
                saga_id=run.id,
                type=type,
                id=self._new_id(),
                timestamp=utcnow() if timestamp is None else timestamp,
                step_id=step_id,
                correlation_id=run.id,
                data=data,
                previous_state=previous_state,
                new_state=new_state,
                error=error,
                duration=duration,
                attempt=attempt,
                max_attempts=max_attempts,
                metadata=run.meta if metadata is None else metadata,
                source="sagamesh.saga",
                trace_id=run.instance.trace_id,
                instance_id=self._instance_id,
            )
        )

    async def announce_retry(self, run: Run, ps: PlannedStep, attempt: int, error: SagaError,
                             delay: float, *, compensation: bool = False) -> None:
        """``retry.attempted`` for the attempt after ``attempt``, published before the wait."""
        self._c.retries += 1
        self.emit(run, EventType.RETRY_ATTEMPTED, step_id=ps.id, attempt=attempt + 1,
                  max_attempts=ps.policy.max_attempts, error=error,
                  duration=timedelta(seconds=delay), **_phase(run, compensation))
        await self.flush(run)

    def announce_exhausted(self, run: Run, ps: PlannedStep, attempt: int, error: SagaError,
                           *, compensation: bool = False) -> None:
        self.emit(run, EventType.RETRY_EXHAUSTED, step_id=ps.id, attempt=attempt,
                  max_attempts=ps.policy.max_attempts, error=error,
                  **_phase(run, compensation))

    async def flush(self, run: Run) -> None:
        """Publish what the last transition emitted; failures are logged and counted only
        (events describe state that is already stored; they never fail a saga)."""
        if not run.pending or self._outbox:
            return
        pending, run.pending = run.pending, []
        failed = 0
        if len(pending) > 1 and self._publish_batch is not None:
            try:
                await self._publish_batch(pending)
            except BatchPublishError as exc:
                failed = len(exc.failures) or len(pending)
            except Exception:
                failed = len(pending)
        else:
            publish = self._publisher.publish_saga_event
            for event in pending:
                try:
                    await publish(event)
                except Exception:
                    failed += 1
        self._c.events += len(pending) - failed
        if failed:
            self._c.publish_failures += failed
            log.warning("saga %s: %d of %d event(s) not published", run.id, failed, len(pending))


def _phase(run: Run, compensation: bool) -> dict[str, Any]:
    # Compensation retries say so, so a reader of the stream can tell them from step retries.
    if not compensation:
        return {}
    return {"metadata": {"definition_id": run.plan.id, "phase": "compensation"}}


def event_data(codec: DataCodec, value: Any) -> Any:
    """JSON-able data for an event; None when the value has no JSON form (events describe the
    transition; the in-memory store keeps the object itself)."""
    if value is None:
        return None
    try:
        return codec.dump(value)
    except SerializationError:
        return None
