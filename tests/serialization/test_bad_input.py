"""Bad bytes and wrong shapes raise SerializationError, never anything else."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sagamesh.errors import SerializationError
from sagamesh.events import EventType, SagaEvent
from sagamesh.serialization import SERIALIZER_NAMES, Serializer, get_serializer
from sagamesh.testing.samples import SAMPLES
from sagamesh.testing.strategies import saga_events

SERIALIZERS = [get_serializer(name) for name in SERIALIZER_NAMES]
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode_or_serialization_error(serializer: Serializer, data: bytes) -> SagaEvent | None:
    try:
        event = serializer.decode(data)
    except SerializationError as exc:
        assert str(exc)  # a message that says what is wrong
        return None
    assert type(event) is SagaEvent and event.id and event.saga_id
    return event


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=SERIALIZER_NAMES)
@FUZZ
@given(data=st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_serialization_error(
    serializer: Serializer, data: bytes
) -> None:
    decode_or_serialization_error(serializer, data)


def _mutations(payload: bytes) -> st.SearchStrategy[bytes]:
    n = len(payload)
    flip = st.tuples(st.integers(0, n - 1), st.integers(0, 255)).map(
        lambda t: payload[: t[0]] + bytes([t[1]]) + payload[t[0] + 1 :]
    )
    cut = st.integers(0, n - 1).map(lambda i: payload[:i])
    drop = st.tuples(st.integers(0, n - 1), st.integers(1, 16)).map(
        lambda t: payload[: t[0]] + payload[t[0] + t[1] :]
    )
    insert = st.tuples(st.integers(0, n), st.binary(min_size=1, max_size=8)).map(
        lambda t: payload[: t[0]] + t[1] + payload[t[0] :]
    )
    return st.one_of(flip, cut, drop, insert)


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=SERIALIZER_NAMES)
@FUZZ
@given(data=st.data())
def test_mutated_valid_payloads_raise_only_serialization_error(
    serializer: Serializer, data: st.DataObject
) -> None:
    event = data.draw(st.one_of(st.sampled_from([f() for f in SAMPLES.values()]), saga_events()))
    payload = serializer.encode(event)
    mutated = data.draw(_mutations(payload))
    decode_or_serialization_error(serializer, mutated)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "truncated"),
        (b"{", "truncated"),
        (b"[]", "Expected `object`, got `array`"),
        (b'"an event"', "Expected `object`, got `str`"),
        (b"null", "Expected `object`, got `null`"),
        (b'{"saga_id":"s","type":"saga.started"}', "missing required field `id`"),
        (b'{"id":"e","type":"saga.started"}', "missing required field `saga_id`"),
        (b'{"id":"e","saga_id":"s"}', "missing required field `type`"),
        (b'{"id":"e","saga_id":1,"type":"saga.started"}', "`$.saga_id`"),
        (b'{"id":"e","saga_id":"s","type":"saga.begun"}', "Invalid enum value 'saga.begun'"),
        (b'{"id":"","saga_id":"s","type":"saga.started"}', "id is empty"),
        (b'{"id":"e","saga_id":"","type":"saga.started"}', "saga_id is empty"),
        (b'{"id":"e","saga_id":"s","type":"saga.started","duration":"PT1S"}', "`$.duration`"),
        (b'{"id":"e","saga_id":"s","type":"saga.started","duration":1.5}', "`$.duration`"),
        (b'{"id":"e","saga_id":"s","type":"saga.started","duration":%d}' % 2**80, "duration"),
        (b'{"id":"e","saga_id":"s","type":"saga.started","timestamp":"yesterday"}', "timestamp"),
        (b'{"id":"e","saga_id":"s","type":"saga.started","metadata":[]}', "`$.metadata`"),
        (b'{"id":"e","saga_id":"s","type":"saga.started","attempt":"1"}', "`$.attempt`"),
        (b'{"id":"e","saga_id":"s","type":"saga.started","error":{"code":"x"}}', "`message`"),
        (
            b'{"id":"e","saga_id":"s","type":"saga.started","error":{"code":"x","message":"m",'
            b'"type":"odd"}}',
            "`$.error.type`",
        ),
        (b'{"id":"e","saga_id":"s","type":"saga.started","data":' + b"[" * 5000, "recursion"),
        (b"\xff\xfe", "malformed"),
    ],
)
def test_wrong_json_shapes_get_a_clear_message(body: bytes, says: str) -> None:
    with pytest.raises(SerializationError, match="invalid JSON event") as caught:
        get_serializer("json").decode(body)
    assert says in str(caught.value)


def test_protobuf_rejects_unknown_event_and_error_types_and_bad_json_payloads() -> None:
    from sagamesh.serialization._proto import saga_event_pb2 as pb

    serializer = get_serializer("protobuf")
    cases = {
        "unknown event type 'saga.begun'": pb.SagaEvent(id="e", saga_id="s", type="saga.begun"),
        "id is empty": pb.SagaEvent(saga_id="s", type="saga.started"),
        "saga_id is empty": pb.SagaEvent(id="e", type="saga.started"),
        "unknown error type 'odd'": pb.SagaEvent(
            id="e", saga_id="s", type="saga.started", error=pb.SagaError(code="c", type="odd")
        ),
        "data": pb.SagaEvent(id="e", saga_id="s", type="saga.started", data=b"{not json"),
        "recursion": pb.SagaEvent(id="e", saga_id="s", type="saga.started", data=b"[" * 5000),
        "details is not an object": pb.SagaEvent(
            id="e", saga_id="s", type="saga.started", error=pb.SagaError(details="[1]")
        ),
    }
    for says, message in cases.items():
        with pytest.raises(SerializationError, match="invalid protobuf event") as caught:
            serializer.decode(message.SerializeToString())
        assert says in str(caught.value) or "JSON" in str(caught.value), says


def test_protobuf_rejects_invalid_utf8_in_strings() -> None:
    body = b"\x0a\x02\xff\xfe"  # field 1 (id), two bytes that are not UTF-8
    with pytest.raises(SerializationError):
        get_serializer("protobuf").decode(body)


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=SERIALIZER_NAMES)
def test_non_bytes_input_is_rejected(serializer: Serializer) -> None:
    with pytest.raises(SerializationError):
        serializer.decode(12345)  # type: ignore[arg-type]


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=SERIALIZER_NAMES)
def test_unencodable_payload_raises_serialization_error(serializer: Serializer) -> None:
    event = SagaEvent(id="e", saga_id="s", type=EventType.SAGA_STARTED, data={"x": object()})
    with pytest.raises(SerializationError, match="cannot encode"):
        serializer.encode(event)


@pytest.mark.parametrize("serializer", SERIALIZERS, ids=SERIALIZER_NAMES)
def test_duration_beyond_int64_nanoseconds_still_round_trips_or_fails_cleanly(
    serializer: Serializer,
) -> None:
    event = SagaEvent(
        id="e", saga_id="s", type=EventType.SAGA_STARTED, duration=timedelta(days=200_000)
    )
    try:
        body = serializer.encode(event)
    except SerializationError:
        return  # protobuf's int64 cannot hold it: a clear error, nothing half-written
    assert serializer.decode(body).duration == event.duration
