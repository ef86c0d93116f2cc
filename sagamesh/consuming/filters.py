"""Event filters: small predicates over a :class:`SagaEvent`, combinable with ``&``, ``|``, ``~``.

A handler runs only when every filter in its config matches. A filter that raises is treated by
the router as a failure of that handler for that event (never as a crash of the consumer).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..events import EventType, SagaEvent

_MISSING = object()


class EventFilter:
    """Base of every filter; subclasses implement :meth:`matches`."""

    __slots__ = ()

    def matches(self, event: SagaEvent) -> bool:
        raise NotImplementedError

    def __call__(self, event: SagaEvent) -> bool:
        return self.matches(event)

    def __and__(self, other: EventFilter) -> EventFilter:
        return AndFilter(self, other)

    def __or__(self, other: EventFilter) -> EventFilter:
        return OrFilter(self, other)

    def __invert__(self) -> EventFilter:
        return NotFilter(self)


class EventTypeFilter(EventFilter):
    """Matches events whose type is one of ``types``."""

    __slots__ = ("types",)

    def __init__(self, *types: EventType | str) -> None:
        self.types = frozenset(EventType(t) for t in types)

    def matches(self, event: SagaEvent) -> bool:
        return event.type in self.types

    def __repr__(self) -> str:
        return f"EventTypeFilter({', '.join(sorted(self.types))})"


class SagaIdFilter(EventFilter):
    """Matches events of the given sagas."""

    __slots__ = ("saga_ids",)

    def __init__(self, *saga_ids: str) -> None:
        self.saga_ids = frozenset(saga_ids)

    def matches(self, event: SagaEvent) -> bool:
        return event.saga_id in self.saga_ids

    def __repr__(self) -> str:
        return f"SagaIdFilter({', '.join(sorted(self.saga_ids))})"


class MetadataFilter(EventFilter):
    """Matches events whose ``metadata`` holds every given key with exactly the given value."""

    __slots__ = ("expected",)

    def __init__(self, expected: dict[str, Any] | None = None, /, **values: Any) -> None:
        self.expected = {**(expected or {}), **values}

    def matches(self, event: SagaEvent) -> bool:
        metadata = event.metadata
        for key, value in self.expected.items():
            if metadata.get(key, _MISSING) != value:
                return False
        return True

    def __repr__(self) -> str:
        return f"MetadataFilter({self.expected!r})"


class PredicateFilter(EventFilter):
    """Wraps any ``callable(event) -> bool``."""

    __slots__ = ("predicate",)

    def __init__(self, predicate: Callable[[SagaEvent], bool]) -> None:
        self.predicate = predicate

    def matches(self, event: SagaEvent) -> bool:
        return bool(self.predicate(event))

    def __repr__(self) -> str:
        return f"PredicateFilter({getattr(self.predicate, '__qualname__', self.predicate)!r})"


class AndFilter(EventFilter):
    __slots__ = ("parts",)

    def __init__(self, *parts: EventFilter) -> None:
        self.parts = tuple(parts)

    def matches(self, event: SagaEvent) -> bool:
        return all(part.matches(event) for part in self.parts)

    def __repr__(self) -> str:
        return "(" + " & ".join(map(repr, self.parts)) + ")"


class OrFilter(EventFilter):
    __slots__ = ("parts",)

    def __init__(self, *parts: EventFilter) -> None:
        self.parts = tuple(parts)

    def matches(self, event: SagaEvent) -> bool:
        return any(part.matches(event) for part in self.parts)

    def __repr__(self) -> str:
        return "(" + " | ".join(map(repr, self.parts)) + ")"


class NotFilter(EventFilter):
    __slots__ = ("inner",)

    def __init__(self, inner: EventFilter) -> None:
        self.inner = inner

    def matches(self, event: SagaEvent) -> bool:
        return not self.inner.matches(event)

    def __repr__(self) -> str:
        return f"~{self.inner!r}"


def all_match(filters: Iterable[EventFilter], event: SagaEvent) -> bool:
    """True when every filter matches (exceptions propagate to the caller)."""
    return all(f.matches(event) for f in filters)
