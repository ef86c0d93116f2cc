"""Where the coordinator sends its events: anything with ``publish_saga_event``.

:class:`InMemoryEventPublisher` delivers to in-process subscribers; a
``sagamesh.publishing.SagaEventPublisher`` sends them over a broker.
"""

from __future__ import annotations

import inspect
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..events import EventType, SagaEvent

log = logging.getLogger(__name__)


@runtime_checkable
class SagaEventSink(Protocol):
    """The one thing the coordinator needs from a publisher."""

    async def publish_saga_event(self, event: SagaEvent) -> None: ...


EventHandler = Callable[[SagaEvent], Awaitable[None] | None]
EventFilterSpec = (
    EventType | str | Iterable[EventType | str] | Callable[[SagaEvent], bool] | Any | None
)


def _compile_filter(spec: EventFilterSpec) -> Callable[[SagaEvent], bool] | None:
    if spec is None:
        return None
    matches = getattr(spec, "matches", None)  # sagamesh.consuming filters and the like
    if callable(matches):
        return matches  # type: ignore[no-any-return]
    if isinstance(spec, str):
        wanted = frozenset({EventType(spec)})
        return lambda e: e.type in wanted
    if callable(spec):
        return spec  # type: ignore[no-any-return]
    types = frozenset(EventType(t) for t in spec)
    return lambda e: e.type in types


@dataclass(slots=True)
class _Subscription:
    id: str
    match: Callable[[SagaEvent], bool] | None
    handler: Callable[[SagaEvent], Any]
    is_async: bool


class InMemoryEventPublisher:
    """Delivers each event, in publish order, to the matching subscribers of this process.

    ``subscribe(filter, handler)``: ``filter`` is ``None`` (everything), an event type or
    several, a predicate, or an object with ``matches(event)``; ``handler`` is sync or async.
    A handler that raises is logged and counted, never propagated to the saga.
    ``history`` keeps the last N events (0 = none) for inspection.
    """

    def __init__(self, *, history: int = 0) -> None:
        self._subs: dict[str, _Subscription] = {}
        self._ids = itertools.count(1)
        self.history: deque[SagaEvent] = deque(maxlen=history or 0)
        self._keep = history > 0
        self.published_count = 0
        self.handler_errors = 0

    def subscribe(self, filter: EventFilterSpec = None, handler: EventHandler | None = None) -> str:
        """Register ``handler`` for events passing ``filter``; returns the subscription id."""
        target: Callable[[SagaEvent], Any]
        if handler is None:  # subscribe(handler) shorthand
            if filter is None or not callable(filter):
                raise TypeError("subscribe(filter, handler) needs a handler")
            target, filter = filter, None
        else:
            target = handler
        sub_id = f"sub-{next(self._ids)}"
        self._subs[sub_id] = _Subscription(
            sub_id, _compile_filter(filter), target, inspect.iscoroutinefunction(target)
        )
        return sub_id

    def unsubscribe(self, subscription_id: str) -> bool:
        return self._subs.pop(subscription_id, None) is not None

    async def publish_saga_event(self, event: SagaEvent) -> None:
        self.published_count += 1
        if self._keep:
            self.history.append(event)
        if not self._subs:
            return
        for sub in list(self._subs.values()):
            if sub.match is not None and not sub.match(event):
                continue
            try:
                if sub.is_async:
                    await sub.handler(event)
                else:
                    result = sub.handler(event)
                    if inspect.isawaitable(result):
                        await result
            except Exception:
                self.handler_errors += 1
                log.exception("event handler %s failed on %s", sub.id, event.type)

    async def publish_batch(self, events: Sequence[SagaEvent]) -> None:
        for event in events:
            await self.publish_saga_event(event)

    async def close(self) -> None:
        self._subs.clear()
