"""Filters: each leaf's semantics, and the boolean algebra of &, |, ~ (property-based)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sagamesh.consuming import (
    EventFilter,
    EventHandlerConfig,
    EventTypeFilter,
    MetadataFilter,
    PredicateFilter,
    SagaEventHandler,
    SagaIdFilter,
)
from sagamesh.errors import ConfigError
from sagamesh.events import EventType, SagaEvent

SAGAS = ["a", "b", "c"]
TENANTS = ["acme", "globex", None]

events = st.builds(
    lambda saga, type_, tenant, n: SagaEvent(
        saga_id=saga, type=type_,
        metadata={k: v for k, v in (("tenant", tenant), ("n", n)) if v is not None}),
    st.sampled_from(SAGAS), st.sampled_from(list(EventType)), st.sampled_from(TENANTS),
    st.integers(0, 3),
)

leaves = st.one_of(
    st.lists(st.sampled_from(list(EventType)), min_size=1, max_size=3).map(
        lambda ts: EventTypeFilter(*ts)),
    st.lists(st.sampled_from(SAGAS), min_size=1, max_size=2).map(lambda ids: SagaIdFilter(*ids)),
    st.sampled_from(["acme", "globex"]).map(lambda t: MetadataFilter(tenant=t)),
    st.integers(0, 3).map(lambda n: PredicateFilter(lambda e, n=n: e.metadata.get("n") == n)),
)


def _tree(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.tuples(st.just("and"), children, children),
        st.tuples(st.just("or"), children, children),
        st.tuples(st.just("not"), children),
    )


trees = st.recursive(leaves, _tree, max_leaves=8)


def build(tree: Any) -> EventFilter:
    if isinstance(tree, EventFilter):
        return tree
    if tree[0] == "and":
        return build(tree[1]) & build(tree[2])
    if tree[0] == "or":
        return build(tree[1]) | build(tree[2])
    return ~build(tree[1])


def evaluate(tree: Any, event: SagaEvent) -> bool:
    """The reference semantics: evaluate the parts, combine with Python's boolean operators."""
    if isinstance(tree, EventFilter):
        return tree.matches(event)
    if tree[0] == "and":
        return evaluate(tree[1], event) and evaluate(tree[2], event)
    if tree[0] == "or":
        return evaluate(tree[1], event) or evaluate(tree[2], event)
    return not evaluate(tree[1], event)


@settings(max_examples=300, deadline=None)
@given(trees, events)
def test_combined_filter_equals_evaluating_its_parts(tree: Any, event: SagaEvent) -> None:
    assert build(tree).matches(event) is evaluate(tree, event)


@settings(max_examples=200, deadline=None)
@given(leaves, leaves, events)
def test_de_morgan_and_double_negation(a: EventFilter, b: EventFilter, ev: SagaEvent) -> None:
    assert (~(a & b)).matches(ev) == ((~a) | (~b)).matches(ev)
    assert (~(a | b)).matches(ev) == ((~a) & (~b)).matches(ev)
    assert (~~a).matches(ev) == a.matches(ev)
    assert (a & ~a).matches(ev) is False
    assert (a | ~a).matches(ev) is True


def test_leaf_semantics() -> None:
    ev = SagaEvent(saga_id="s1", type=EventType.SAGA_COMPLETED,
                   metadata={"tenant": "acme", "region": "eu"})
    assert EventTypeFilter(EventType.SAGA_COMPLETED, "saga.failed").matches(ev)
    assert not EventTypeFilter(EventType.SAGA_STARTED).matches(ev)
    assert SagaIdFilter("s0", "s1").matches(ev)
    assert not SagaIdFilter("s2").matches(ev)
    assert MetadataFilter(tenant="acme").matches(ev)
    assert MetadataFilter({"tenant": "acme"}, region="eu").matches(ev)
    assert not MetadataFilter(tenant="acme", region="us").matches(ev)
    assert not MetadataFilter(missing=None).matches(ev)  # absent key never equals None
    assert PredicateFilter(lambda e: e.saga_id.startswith("s")).matches(ev)
    assert ev in [e for e in [ev] if EventTypeFilter("saga.completed")(e)]  # callable form


def test_unknown_event_type_is_rejected() -> None:
    with pytest.raises(ValueError):
        EventTypeFilter("saga.exploded")


def test_can_handle_checks_types_then_every_filter() -> None:
    class H(SagaEventHandler):
        config = EventHandlerConfig(
            handler_id="h", supported_event_types=[EventType.SAGA_STARTED],
            filters=[MetadataFilter(tenant="acme"), ~SagaIdFilter("blocked")])

    h = H()
    ok = SagaEvent(saga_id="s", type=EventType.SAGA_STARTED, metadata={"tenant": "acme"})
    assert h.can_handle(ok)
    assert not h.can_handle(ok.replace(type=EventType.SAGA_FAILED))
    assert not h.can_handle(ok.replace(metadata={"tenant": "globex"}))
    assert not h.can_handle(ok.replace(saga_id="blocked"))


def test_config_rejects_non_filters_and_bad_bounds() -> None:
    with pytest.raises(ConfigError, match="filters"):
        EventHandlerConfig(handler_id="x", filters=[lambda e: True])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="max_concurrency"):
        EventHandlerConfig(handler_id="x", max_concurrency=0)
    with pytest.raises(ConfigError, match="processing_timeout"):
        EventHandlerConfig(handler_id="x", processing_timeout=0)
    with pytest.raises(ConfigError, match="handler_id"):
        EventHandlerConfig(handler_id="")
