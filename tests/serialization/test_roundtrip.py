"""Every field of SagaEvent survives encode -> decode exactly, for every serializer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sagamesh.events import ErrorType, EventType, SagaError, SagaEvent
from sagamesh.serialization import SERIALIZER_NAMES, Serializer, get_serializer
from sagamesh.testing.samples import SAMPLES
from sagamesh.testing.strategies import (
    durations,
    json_values,
    offset_datetimes,
    saga_errors,
    saga_events,
)

SERIALIZERS = [get_serializer(name) for name in SERIALIZER_NAMES]
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(params=SERIALIZER_NAMES)
def serializer(request: pytest.FixtureRequest) -> Serializer:
    return get_serializer(request.param)


def assert_same(decoded: SagaEvent, event: SagaEvent) -> None:
    """Equal field by field, with the types kept (EventType, timedelta, aware UTC)."""
    assert decoded == event
    assert type(decoded) is SagaEvent
    assert type(decoded.type) is EventType
    assert type(decoded.duration) is timedelta
    assert decoded.timestamp.tzinfo is UTC
    error = decoded.error
    while error is not None:
        assert type(error.type) is ErrorType
        assert error.timestamp.tzinfo is UTC
        error = error.cause


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=SERIALIZER_NAMES)
@PROPERTY
@given(event=saga_events())
def test_every_field_round_trips(serializer: Serializer, event: SagaEvent) -> None:
    assert_same(serializer.decode(serializer.encode(event)), event)


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=SERIALIZER_NAMES)
@PROPERTY
@given(event=saga_events(error=True))
def test_error_cause_chains_round_trip(serializer: Serializer, event: SagaEvent) -> None:
    decoded = serializer.decode(serializer.encode(event))
    assert_same(decoded, event)
    depth = 0
    error, original = decoded.error, event.error
    while original is not None:
        assert error is not None and error.code == original.code
        assert error.details == original.details
        error, original, depth = error.cause, original.cause, depth + 1
    assert error is None


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=SERIALIZER_NAMES)
@PROPERTY
@given(value=json_values(30))
def test_any_json_payload_round_trips_in_each_slot(serializer: Serializer, value: object) -> None:
    event = SagaEvent(
        id="e",
        saga_id="s",
        type=EventType.STATE_CHANGED,
        data=value,
        previous_state=value,
        new_state=value,
        metadata={"v": value},
    )
    decoded = serializer.decode(serializer.encode(event))
    assert decoded.data == value and decoded.previous_state == value
    assert decoded.new_state == value and decoded.metadata == {"v": value}


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=SERIALIZER_NAMES)
@PROPERTY
@given(duration=durations())
def test_durations_round_trip_to_the_microsecond(
    serializer: Serializer, duration: timedelta
) -> None:
    event = SagaEvent(id="e", saga_id="s", type=EventType.SAGA_STEP_COMPLETED, duration=duration)
    assert serializer.decode(serializer.encode(event)).duration == duration


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=SERIALIZER_NAMES)
@PROPERTY
@given(timestamp=offset_datetimes(), error=saga_errors(2))
def test_offset_timestamps_come_back_as_the_same_instant_in_utc(
    serializer: Serializer, timestamp: datetime, error: SagaError
) -> None:
    error = msgspec.structs.replace(error, timestamp=timestamp)
    event = SagaEvent(
        id="e", saga_id="s", type=EventType.SAGA_STARTED, timestamp=timestamp, error=error
    )
    decoded = serializer.decode(serializer.encode(event))
    assert decoded.timestamp == timestamp
    assert decoded.timestamp.tzinfo is UTC
    assert decoded.error is not None
    assert decoded.error.timestamp == timestamp
    assert decoded.error.timestamp.tzinfo is UTC


def test_naive_timestamps_are_taken_as_utc(serializer: Serializer) -> None:
    naive = datetime(2024, 5, 1, 10, 20, 30, 5)
    event = SagaEvent(id="e", saga_id="s", type=EventType.SAGA_STARTED, timestamp=naive)
    assert serializer.decode(serializer.encode(event)).timestamp == naive.replace(tzinfo=UTC)


def test_metadata_keeps_string_and_other_values_apart(serializer: Serializer) -> None:
    metadata = {
        "tenant": "acme",
        "count": 3,
        "ratio": 0.5,
        "flag": True,
        "none": None,
        "nested": {"a": [1, "2"]},
        "digits": "3",
        "json_text": '{"a": 1}',
    }
    event = SagaEvent(id="e", saga_id="s", type=EventType.SAGA_STARTED, metadata=metadata)
    decoded = serializer.decode(serializer.encode(event))
    assert decoded.metadata == metadata
    assert {k: type(v) for k, v in decoded.metadata.items()} == {
        k: type(v) for k, v in metadata.items()
    }


@pytest.mark.parametrize("size", sorted(SAMPLES))
def test_samples_round_trip(serializer: Serializer, size: str) -> None:
    event = SAMPLES[size]()
    assert_same(serializer.decode(serializer.encode(event)), event)


def test_zero_and_default_fields_round_trip(serializer: Serializer) -> None:
    event = SagaEvent(
        id="e",
        saga_id="s",
        type=EventType.DEAD_LETTERED,
        data=0,
        previous_state=False,
        new_state="",
        duration=timedelta(0),
        metadata={"": ""},
        timestamp=datetime(1970, 1, 1, tzinfo=UTC),
    )
    assert_same(serializer.decode(serializer.encode(event)), event)


def test_fixed_offset_is_normalised_on_encode(serializer: Serializer) -> None:
    plus8 = timezone(timedelta(hours=8))
    event = SagaEvent(
        id="e",
        saga_id="s",
        type=EventType.SAGA_STARTED,
        timestamp=datetime(2024, 5, 1, 18, 20, 30, tzinfo=plus8),
    )
    decoded = serializer.decode(serializer.encode(event))
    assert decoded.timestamp == datetime(2024, 5, 1, 10, 20, 30, tzinfo=UTC)
    assert decoded.timestamp.tzinfo is UTC


@given(st.data())
@settings(max_examples=20, deadline=None)
def test_json_and_protobuf_agree(data: st.DataObject) -> None:
    event = data.draw(saga_events())
    json_s, proto_s = get_serializer("json"), get_serializer("protobuf")
    assert json_s.decode(json_s.encode(event)) == proto_s.decode(proto_s.encode(event))


@settings(max_examples=50, deadline=None)
@given(event=saga_events())
def test_mirror_structs_match_saga_event(event: SagaEvent) -> None:
    """The decode mirror has SagaEvent's fields in order, and both conversions agree."""
    from sagamesh.serialization import _mirror
    from sagamesh.serialization import json_serializer as js
    from sagamesh.serialization import protobuf_serializer as ps

    assert js._SWITCH_CLASS and ps._FAST_BUILD  # the fast conversions are in use here
    body = js.JsonSerializer().encode(event)
    wire = msgspec.json.decode(body, type=js._WireEvent)
    wire.duration = event.duration
    assert _mirror.copy_fields(wire) == event
    positional = ps._PositionalEvent(*(getattr(event, n) for n in ps._POSITIONAL_ORDER))
    assert _mirror.copy_fields(positional) == event
