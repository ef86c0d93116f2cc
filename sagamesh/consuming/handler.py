"""Handlers in class form (:class:`SagaEventHandler`) and function form (``@router.handler``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from .._durations import Duration, seconds
from ..errors import ConfigError
from ..events import EventType, SagaEvent
from .context import HandlerContext
from .filters import EventFilter
from .metrics import HandlerMetrics


class FailureAction(StrEnum):
    """What to do with an event whose handler failed.

    RETRY: redeliver after the retry policy's delay; dead-letter once the policy is exhausted.
    REQUEUE: redeliver at once (no delay); still bounded by the policy's ``max_attempts``.
    DEAD_LETTER: send to the DLQ now.  DISCARD: drop it (ack) and go on.
    """

    RETRY = "retry"
    REQUEUE = "requeue"
    DEAD_LETTER = "dead_letter"
    DISCARD = "discard"


@dataclass(slots=True)
class EventHandlerConfig:
    """How a handler is routed and bounded.

    Empty ``supported_event_types`` means every type. ``max_concurrency`` None means unbounded.
    ``processing_timeout`` (seconds or timedelta; None = no limit) cancels a run that takes longer.
    """

    handler_id: str
    handler_name: str = ""
    description: str = ""
    supported_event_types: Sequence[EventType | str] = ()
    priority: int = 0
    max_concurrency: int | None = None
    processing_timeout: Duration | None = 30.0
    filters: Sequence[EventFilter] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.handler_id:
            raise ConfigError("a handler needs a handler_id", field="handler_id")
        if not self.handler_name:
            self.handler_name = self.handler_id
        try:
            self.supported_event_types = tuple(EventType(t) for t in self.supported_event_types)
        except ValueError as exc:
            raise ConfigError(str(exc), field="supported_event_types") from exc
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ConfigError("max_concurrency must be >= 1 (or None)", field="max_concurrency")
        timeout = seconds(self.processing_timeout)
        if timeout is not None and timeout <= 0:
            raise ConfigError("processing_timeout must be > 0 (or None)",
                              field="processing_timeout")
        self.processing_timeout = timeout
        self.filters = tuple(self.filters)
        for f in self.filters:
            if not isinstance(f, EventFilter):
                raise ConfigError(f"{f!r} is not an EventFilter", field="filters")


class SagaEventHandler:
    """Base of class-form handlers: set ``config`` (class attribute or constructor argument)
    and implement :meth:`handle_saga_event`; override the callbacks as needed."""

    config: EventHandlerConfig

    def __init__(self, config: EventHandlerConfig | None = None) -> None:
        if config is not None:
            self.config = config

    # -- identity -------------------------------------------------------------------------
    @property
    def handler_id(self) -> str:
        return self._config().handler_id

    @property
    def priority(self) -> int:
        return self._config().priority

    @property
    def metrics(self) -> HandlerMetrics:
        found: HandlerMetrics | None = self.__dict__.get("_sagamesh_metrics")
        if found is None:
            found = self.__dict__["_sagamesh_metrics"] = HandlerMetrics()
        return found

    def get_metrics(self) -> HandlerMetrics:
        """A copy of this handler's metrics."""
        return self.metrics.snapshot()

    def _config(self) -> EventHandlerConfig:
        config = getattr(self, "config", None)
        if not isinstance(config, EventHandlerConfig):
            raise ConfigError(f"{type(self).__name__} has no EventHandlerConfig `config`",
                              field="config")
        return config

    # -- routing --------------------------------------------------------------------------
    def can_handle(self, event: SagaEvent) -> bool:
        """Type supported and every filter matches. Filter exceptions propagate."""
        config = self._config()
        types = config.supported_event_types
        if types and event.type not in types:
            return False
        for f in config.filters:
            if not f.matches(event):
                return False
        return True

    # -- lifecycle and callbacks ----------------------------------------------------------
    async def start(self) -> None:
        """Called once when the consumer starts (open connections, warm caches)."""

    async def stop(self) -> None:
        """Called once when the consumer stops, after in-flight work drained."""

    async def handle_saga_event(self, event: SagaEvent, ctx: HandlerContext) -> None:
        raise NotImplementedError

    async def on_event_processed(self, event: SagaEvent, duration: float) -> None:
        """After a successful run; ``duration`` in seconds."""

    async def on_event_failed(self, event: SagaEvent, error: BaseException) -> FailureAction:
        """After a failed run (raised, timed out, or a filter raised). Default: RETRY."""
        return FailureAction.RETRY


HandlerFunc = Callable[[SagaEvent, HandlerContext], Awaitable[None]]
FailureCallback = Callable[[SagaEvent, BaseException], FailureAction | Awaitable[FailureAction]]


class FunctionHandler(SagaEventHandler):
    """A coroutine function ``fn(event, ctx)`` as a handler (what ``@router.handler`` builds)."""

    def __init__(
        self,
        fn: HandlerFunc,
        config: EventHandlerConfig,
        *,
        on_failure: FailureAction | FailureCallback | None = None,
    ) -> None:
        super().__init__(config)
        self.fn = fn
        self.on_failure = on_failure

    async def handle_saga_event(self, event: SagaEvent, ctx: HandlerContext) -> None:
        await self.fn(event, ctx)

    async def on_event_failed(self, event: SagaEvent, error: BaseException) -> FailureAction:
        if self.on_failure is None:
            return FailureAction.RETRY
        if isinstance(self.on_failure, FailureAction):
            return self.on_failure
        result = self.on_failure(event, error)
        if isinstance(result, FailureAction):
            return result
        return await result

    def __repr__(self) -> str:
        return f"FunctionHandler({self.handler_id!r})"
