"""The event router: which registered handlers run for an event."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .._durations import Duration, seconds
from ..errors import ConfigError
from ..events import EventType, SagaEvent
from .filters import EventFilter
from .handler import (
    EventHandlerConfig,
    FailureAction,
    FailureCallback,
    FunctionHandler,
    HandlerFunc,
    SagaEventHandler,
)
from .metrics import HandlerMetrics


class RoutingStrategy(StrEnum):
    """FIRST: the first registered match. ALL: every match (run highest priority first).
    BY_PRIORITY: every match of the highest matching priority."""

    FIRST = "first"
    ALL = "all"
    BY_PRIORITY = "by_priority"


@dataclass(frozen=True, slots=True)
class Route:
    """A handler chosen for an event; ``error`` is set when one of its filters raised, which
    makes this handler fail for this event (retry / DLQ as usual) instead of crashing."""

    handler: SagaEventHandler
    handler_id: str
    priority: int
    limiter: asyncio.Semaphore | None
    timeout: float | None
    error: BaseException | None = None
    #: What runs the handler: a function handler's own function (one coroutine less per event).
    call: HandlerFunc | None = None
    #: ``on_event_processed`` when the handler overrides it (else nothing is awaited).
    after: Callable[[SagaEvent, float], Awaitable[None]] | None = None
    #: The handler's metrics (one object for its lifetime), so no property call per event.
    metrics: HandlerMetrics | None = None


@dataclass(slots=True)
class _Registration:
    handler: SagaEventHandler
    config: EventHandlerConfig
    limiter: asyncio.Semaphore | None
    ok: Route | None = None
    #: No filters and the stock ``can_handle``: the type index alone decides (no call per event).
    takes_all: bool = False

    def __post_init__(self) -> None:
        self.takes_all = (not self.config.filters
                          and type(self.handler).can_handle is SagaEventHandler.can_handle)

    def route(self, error: BaseException | None = None) -> Route:
        if error is None and self.ok is not None:
            return self.ok
        c = self.config
        handler = self.handler
        kind = type(handler)
        call = (handler.fn if isinstance(handler, FunctionHandler)
                and kind.handle_saga_event is FunctionHandler.handle_saga_event
                else handler.handle_saga_event)
        after = (None if kind.on_event_processed is SagaEventHandler.on_event_processed
                 else handler.on_event_processed)
        made = Route(handler, c.handler_id, c.priority, self.limiter,
                     seconds(c.processing_timeout), error, call, after, handler.metrics)
        if error is None:
            self.ok = made
        return made


class EventRouter:
    def __init__(self, strategy: RoutingStrategy | str = RoutingStrategy.ALL) -> None:
        self._strategy = RoutingStrategy(strategy)
        self._registrations: list[_Registration] = []
        self._by_type: dict[EventType, list[_Registration]] = {}
        # Types whose every candidate takes all events: their routes, fixed until the handlers
        # or the strategy change (no per-event list, loop or sort).
        self._fixed: dict[EventType, tuple[Route, ...]] = {}
        self._started: list[SagaEventHandler] = []

    @property
    def strategy(self) -> RoutingStrategy:
        return self._strategy

    @strategy.setter
    def strategy(self, value: RoutingStrategy | str) -> None:
        self._strategy = RoutingStrategy(value)
        self._reindex()

    # -- registration ---------------------------------------------------------------------
    def register(self, handler: SagaEventHandler) -> SagaEventHandler:
        config = handler._config()
        if any(r.config.handler_id == config.handler_id for r in self._registrations):
            raise ConfigError(f"handler id {config.handler_id!r} is already registered",
                              field="handler_id")
        limiter = asyncio.Semaphore(config.max_concurrency) if config.max_concurrency else None
        self._registrations.append(_Registration(handler, config, limiter))
        self._reindex()
        return handler

    def unregister(self, handler_id: str) -> None:
        self._registrations = [r for r in self._registrations
                               if r.config.handler_id != handler_id]
        self._reindex()

    def reconfigure(self, handler_id: str, **changes: Any) -> SagaEventHandler:
        """Replace fields of a registered handler's config, keeping its registration order
        (e.g. priority or max_concurrency from settings)."""
        for i, reg in enumerate(self._registrations):
            if reg.config.handler_id == handler_id:
                config = dataclasses.replace(reg.config, **changes)
                reg.handler.config = config
                limiter = asyncio.Semaphore(config.max_concurrency) \
                    if config.max_concurrency else None
                self._registrations[i] = _Registration(reg.handler, config, limiter)
                self._reindex()
                return reg.handler
        raise KeyError(handler_id)

    def handler(
        self,
        *event_types: EventType | str,
        priority: int = 0,
        filters: Sequence[EventFilter] = (),
        max_concurrency: int | None = None,
        processing_timeout: Duration | None = 30.0,
        handler_id: str | None = None,
        name: str | None = None,
        description: str = "",
        on_failure: FailureAction | FailureCallback | None = None,
    ) -> Callable[[HandlerFunc], HandlerFunc]:
        """Register ``fn(event, ctx)``; no event types means every type. Returns ``fn``
        unchanged; the handler object is ``router.get_handler(handler_id)``."""

        def decorate(fn: HandlerFunc) -> HandlerFunc:
            hid = handler_id or f"{fn.__module__}.{fn.__qualname__}"
            config = EventHandlerConfig(
                handler_id=hid, handler_name=name or fn.__name__, description=description,
                supported_event_types=event_types, priority=priority,
                max_concurrency=max_concurrency, processing_timeout=processing_timeout,
                filters=list(filters))
            self.register(FunctionHandler(fn, config, on_failure=on_failure))
            return fn

        return decorate

    def _reindex(self) -> None:
        self._by_type = {
            t: [r for r in self._registrations
                if not r.config.supported_event_types or t in r.config.supported_event_types]
            for t in EventType
        }
        self._fixed = {}
        for t, candidates in self._by_type.items():
            if all(r.takes_all for r in candidates):
                self._fixed[t] = tuple(self._choose([r.route() for r in candidates]))

    @property
    def handlers(self) -> list[SagaEventHandler]:
        return [r.handler for r in self._registrations]

    def get_handler(self, handler_id: str) -> SagaEventHandler:
        for r in self._registrations:
            if r.config.handler_id == handler_id:
                return r.handler
        raise KeyError(handler_id)

    def event_types(self) -> list[EventType] | None:
        """Types some handler wants (None: some handler takes every type)."""
        wanted: set[EventType] = set()
        for r in self._registrations:
            if not r.config.supported_event_types:
                return None
            wanted.update(EventType(t) for t in r.config.supported_event_types)
        return sorted(wanted)

    # -- routing --------------------------------------------------------------------------
    def route(self, event: SagaEvent) -> Sequence[Route]:
        """The handlers to run for ``event``, in execution order (never raises)."""
        fixed = self._fixed.get(event.type)
        if fixed is not None:
            return fixed
        candidates = self._by_type.get(event.type, ())
        routes: list[Route] = []
        first = self.strategy is RoutingStrategy.FIRST
        for reg in candidates:
            if reg.takes_all:
                routes.append(reg.route())
                if first:
                    break
                continue
            try:
                matched = reg.handler.can_handle(event)
            except Exception as exc:
                routes.append(reg.route(exc))
                matched = True
            else:
                if matched:
                    routes.append(reg.route())
            if matched and first:
                break
        return self._choose(routes)

    def _choose(self, routes: list[Route]) -> list[Route]:
        """Matched routes (in registration order) → those to run, in execution order."""
        if self.strategy is RoutingStrategy.FIRST:
            return routes[:1]
        if len(routes) > 1:
            routes.sort(key=lambda r: -r.priority)
            if self.strategy is RoutingStrategy.BY_PRIORITY:
                top = routes[0].priority
                routes = [r for r in routes if r.priority == top]
        return routes

    # -- lifecycle and metrics ------------------------------------------------------------
    async def start(self) -> None:
        """Start every handler once; if one fails, stop those already started and re-raise."""
        for reg in self._registrations:
            if reg.handler in self._started:
                continue
            try:
                await reg.handler.start()
            except BaseException:
                await self.stop()
                raise
            self._started.append(reg.handler)

    async def stop(self) -> None:
        started, self._started = self._started, []
        errors: list[BaseException] = []
        for handler in reversed(started):
            try:
                await handler.stop()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def get_metrics(self) -> dict[str, HandlerMetrics]:
        return {r.config.handler_id: r.handler.get_metrics() for r in self._registrations}
