"""The JSON record codec of the durable stores: every SagaInstance/StepState round-trips."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sagamesh.errors import SerializationError
from sagamesh.events import ErrorType, SagaError
from sagamesh.saga.state import SagaInstance, SagaState, StepState, StepStatus
from sagamesh.saga.storage.records import (
    decode_saga,
    decode_step,
    encode,
    encode_saga,
    encode_step,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
times = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1),
                     timezones=st.just(UTC))
errors = st.none() | st.builds(
    SagaError, code=st.text(min_size=1, max_size=10), message=st.text(max_size=20),
    type=st.sampled_from(list(ErrorType)), timestamp=times,
    details=st.dictionaries(st.text(max_size=5), json_values, max_size=3),
)
sagas = st.builds(
    SagaInstance,
    id=st.text(min_size=1, max_size=20), definition_id=st.text(min_size=1, max_size=10),
    state=st.sampled_from(list(SagaState)), current_step=st.integers(0, 50),
    completed_steps=st.integers(0, 50), total_steps=st.integers(0, 50), data=json_values,
    result=json_values, error=errors, start_time=st.none() | times, end_time=st.none() | times,
    created_at=times, updated_at=times, version=st.integers(0, 2**40),
    metadata=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    trace_id=st.text(max_size=10), timeout_at=st.none() | times,
    lease_owner=st.none() | st.text(max_size=10), lease_expires_at=st.none() | times,
)
steps = st.builds(
    StepState, saga_id=st.text(min_size=1, max_size=10), step_id=st.text(min_size=1, max_size=10),
    step_index=st.integers(0, 100), status=st.sampled_from(list(StepStatus)),
    attempt=st.integers(0, 10), input=json_values, output=json_values, error=errors,
    started_at=st.none() | times, completed_at=st.none() | times,
    compensation_attempt=st.integers(0, 10), compensation_error=errors,
)


@settings(max_examples=100, deadline=None)
@given(sagas)
def test_saga_records_round_trip(saga: SagaInstance) -> None:
    assert decode_saga(encode_saga(saga)) == saga


@settings(max_examples=100, deadline=None)
@given(steps)
def test_step_records_round_trip(step: StepState) -> None:
    assert decode_step(encode_step(step)) == step


def test_unstorable_values_and_corrupt_records_are_typed_errors() -> None:
    with pytest.raises(SerializationError, match="not storable"):
        encode({"x": object()})
    with pytest.raises(SerializationError, match="corrupt"):
        decode_saga(b'{"id": 1}')
    with pytest.raises(SerializationError, match="corrupt"):
        decode_step(b"not json")
