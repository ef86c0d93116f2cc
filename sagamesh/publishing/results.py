"""What an asynchronous batch publish resolves to."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class BatchPublishResult:
    """``failed_event_ids`` lists every event that did not reach its topic; those also in
    ``dead_lettered_event_ids`` are safe in the DLQ. ``error`` is None when nothing was lost
    (a :class:`~sagamesh.errors.BatchPublishError` naming the rest, or the error that refused
    the whole batch, e.g. an InvalidEventError). ``duration`` is in seconds."""

    published_count: int
    failed_count: int
    duration: float
    error: BaseException | None = None
    failed_event_ids: list[str] = field(default_factory=list)
    dead_lettered_event_ids: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None
