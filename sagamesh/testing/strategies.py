"""Hypothesis strategies for sagamesh's wire types, shared by every area's property tests.

Generated values are restricted to what JSON represents exactly, so that a round trip through
any serializer must give back an equal event:

* payloads (``data``, ``previous_state``, ``new_state``, ``metadata`` values, error
  ``details``) are built from ``None``, bools, ints, finite floats, strings, lists and
  str-keyed dicts - no tuples (they come back as lists), sets, bytes, NaN or infinities
  (msgspec writes NaN as ``null``);
* timestamps are aware UTC datetimes (microsecond precision, what ``datetime`` holds);
* durations fit in int64 nanoseconds, the seed's ``time.Duration``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from ..events import ErrorType, EventType, SagaError, SagaEvent

#: Go's time.Duration range is about +/-292 years; stay well inside it.
MAX_DURATION = timedelta(days=100_000)

_scalars: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Any JSON value (the shape of event payloads)."""
    return st.recursive(
        _scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(st.text(max_size=10), inner, max_size=4),
        ),
        max_leaves=max_leaves,
    )


def json_objects(max_leaves: int = 12) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.text(max_size=10), json_values(max_leaves), max_size=4)


def utc_datetimes() -> st.SearchStrategy[datetime]:
    return st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    )


def offset_datetimes() -> st.SearchStrategy[datetime]:
    """Aware datetimes with any whole-minute UTC offset (the RFC 3339 forms others send)."""
    from datetime import timezone

    offsets = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
        lambda minutes: timezone(timedelta(minutes=minutes))
    )
    return st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets
    )


def durations() -> st.SearchStrategy[timedelta]:
    return st.timedeltas(min_value=-MAX_DURATION, max_value=MAX_DURATION)


_ids = st.text(min_size=1, max_size=40)
_strings = st.text(max_size=30)


def saga_errors(max_depth: int = 3) -> st.SearchStrategy[SagaError]:
    """Errors with a cause chain up to ``max_depth`` long."""

    def build(cause: st.SearchStrategy[SagaError | None]) -> st.SearchStrategy[SagaError]:
        return st.builds(
            SagaError,
            code=_strings,
            message=_strings,
            type=st.sampled_from(ErrorType),
            retryable=st.booleans(),
            timestamp=utc_datetimes(),
            details=json_objects(6),
            cause=cause,
        )

    strategy: st.SearchStrategy[SagaError | None] = st.none()
    for _ in range(max_depth):
        strategy = st.one_of(st.none(), build(strategy))
    return build(strategy)


def saga_events(
    *, data: st.SearchStrategy[Any] | None = None, error: bool | None = None
) -> st.SearchStrategy[SagaEvent]:
    """Events with every field drawn (``error=True``/``False`` forces one or none)."""
    payload = data if data is not None else json_values()
    errors: st.SearchStrategy[SagaError | None]
    if error is None:
        errors = st.one_of(st.none(), saga_errors())
    elif error:
        errors = saga_errors()
    else:
        errors = st.none()
    return st.builds(
        SagaEvent,
        id=_ids,
        saga_id=_ids,
        step_id=_strings,
        type=st.sampled_from(EventType),
        version=_strings,
        timestamp=utc_datetimes(),
        correlation_id=_strings,
        data=payload,
        previous_state=payload,
        new_state=payload,
        error=errors,
        duration=durations(),
        attempt=st.integers(min_value=0, max_value=2**31 - 1),
        max_attempts=st.integers(min_value=0, max_value=2**31 - 1),
        metadata=st.dictionaries(st.text(max_size=10), json_values(6), max_size=5),
        source=_strings,
        service=_strings,
        service_version=_strings,
        trace_id=_strings,
        span_id=_strings,
        parent_span_id=_strings,
        instance_id=_strings,
    )
