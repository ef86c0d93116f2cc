"""Wire compatibility with the seed Go framework: its JSON form and its protobuf field numbers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sagamesh.events import ErrorType, EventType, SagaError, SagaEvent
from sagamesh.serialization import get_serializer
from sagamesh.testing.samples import typical_event

SEED_JSON = (Path(__file__).parent / "fixtures" / "seed_event.json").read_bytes()


def test_seed_json_event_decodes_field_by_field() -> None:
    event = get_serializer("json").decode(SEED_JSON)

    assert event.id == "evt-01HX3K9Q7W"
    assert event.saga_id == "saga-order-42"
    assert event.step_id == "charge-payment"
    assert event.type is EventType.SAGA_STEP_FAILED
    assert event.version == "1.0"
    # nanoseconds are rounded to the microsecond a datetime holds
    assert event.timestamp == datetime(2024, 5, 1, 10, 20, 30, 123457, tzinfo=UTC)
    assert event.timestamp.tzinfo is UTC
    assert event.correlation_id == "corr-9"
    assert event.data == {
        "order_id": "ORD-42",
        "amount": 99.95,
        "items": [1, 2, 3],
        "gift": False,
        "note": None,
    }
    assert event.previous_state == {"status": "reserved"}
    assert event.new_state == {"status": "payment_failed"}
    assert event.duration == timedelta(seconds=1, microseconds=500000)  # 1_500_000_001 ns
    assert (event.attempt, event.max_attempts) == (2, 5)
    assert event.metadata == {"tenant": "acme", "region": "eu-west-1"}
    assert (event.source, event.service, event.service_version) == (
        "order-service",
        "payment-service",
        "2.3.1",
    )
    assert event.trace_id == "4bf92f3577b34da6a3ce929e0e4736f1"
    assert event.span_id == "00f067aa0ba902b7"
    assert event.parent_span_id == "b7ad6b7169203331"
    assert event.instance_id == ""

    error = event.error
    assert error is not None
    assert (error.code, error.message, error.type, error.retryable) == (
        "PAYMENT_DECLINED",
        "card declined",
        ErrorType.BUSINESS,
        False,
    )
    # "+08:00" is read as the same instant and kept in UTC
    assert error.timestamp == datetime(2024, 5, 1, 10, 20, 30, 500000, tzinfo=UTC)
    assert error.timestamp.tzinfo is UTC
    assert error.details == {"gateway": "stripe", "http_status": 402}
    cause = error.cause
    assert cause is not None
    assert (cause.code, cause.type, cause.retryable) == (
        "GATEWAY_TIMEOUT",
        ErrorType.TIMEOUT,
        True,
    )
    assert cause.timestamp == datetime(2024, 5, 1, 10, 20, 29, tzinfo=UTC)
    assert cause.cause is None


def test_seed_json_event_survives_a_round_trip_through_both_serializers() -> None:
    event = get_serializer("json").decode(SEED_JSON)
    for name in ("json", "protobuf"):
        serializer = get_serializer(name)
        assert serializer.decode(serializer.encode(event)) == event


def test_json_uses_the_seed_field_names_and_forms() -> None:
    event = typical_event()
    wire = json.loads(get_serializer("json").encode(event))
    assert wire["saga_id"] == event.saga_id
    assert wire["step_id"] == "reserve-inventory"
    assert wire["correlation_id"] == "req-7f3a2c91"
    assert wire["max_attempts"] == 3
    assert wire["service_version"] == "1.4.2"
    assert wire["trace_id"] == event.trace_id and wire["span_id"] == event.span_id
    assert wire["type"] == "saga.step.completed"
    assert wire["duration"] == 42_317_000  # integer nanoseconds, like Go's time.Duration
    assert type(wire["duration"]) is int
    assert wire["timestamp"] == "2024-05-01T10:20:30.123456Z"  # RFC 3339, UTC


def test_json_error_uses_the_seed_field_names() -> None:
    error = SagaError(
        code="E1",
        message="boom",
        type=ErrorType.NETWORK,
        retryable=True,
        timestamp=datetime(2024, 5, 1, tzinfo=UTC),
        details={"k": 1},
        cause=SagaError(code="E0", message="root", timestamp=datetime(2024, 5, 1, tzinfo=UTC)),
    )
    event = SagaEvent(id="e", saga_id="s", type=EventType.SAGA_FAILED, error=error)
    wire = json.loads(get_serializer("json").encode(event))["error"]
    assert wire == {
        "code": "E1",
        "message": "boom",
        "type": "network",
        "retryable": True,
        "timestamp": "2024-05-01T00:00:00Z",
        "details": {"k": 1},
        "cause": {"code": "E0", "message": "root", "timestamp": "2024-05-01T00:00:00Z"},
    }


def test_seed_duration_in_the_middle_of_the_object_and_zero_duration() -> None:
    serializer = get_serializer("json")
    body = b'{"id":"e","saga_id":"s","type":"saga.started","duration":0,"attempt":1}'
    event = serializer.decode(body)
    assert event.duration == timedelta(0) and event.attempt == 1
    long_ns = 400 * 86_400 * 10**9 + 7_000  # 400 days and 7 microseconds
    body = b'{"id":"e","saga_id":"s","type":"saga.started","duration":%d}' % long_ns
    assert serializer.decode(body).duration == timedelta(days=400, microseconds=7)
    negative = b'{"id":"e","saga_id":"s","type":"saga.started","duration":-1500}'
    assert serializer.decode(negative).duration == timedelta(microseconds=-1)  # -1.5 us


# -- protobuf: a hand-written wire reader/writer, independent of the generated code ---------


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, value: Any) -> bytes:
    if isinstance(value, bool | int):
        return _varint(number << 3) + _varint(int(value))
    raw = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(raw)) + raw


def _read(data: bytes) -> dict[int, list[Any]]:
    """field number -> values (varints as int, length-delimited as bytes)."""
    fields: dict[int, list[Any]] = {}
    pos = 0

    def varint() -> int:
        nonlocal pos
        shift = result = 0
        while True:
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    while pos < len(data):
        key = varint()
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value: Any = varint()
        elif wire_type == 2:
            length = varint()
            value = data[pos : pos + length]
            pos += length
        else:  # pragma: no cover - the envelope uses no other wire types
            raise AssertionError(f"unexpected wire type {wire_type}")
        fields.setdefault(number, []).append(value)
    return fields


def _seed_protobuf_event() -> bytes:
    """An event as the seed's Go code writes it: fields 1-21 only."""
    timestamp = _field(1, 1714558830) + _field(2, 123456789)  # seconds, nanos
    error = (
        _field(1, "PAYMENT_DECLINED")
        + _field(2, "card declined")
        + _field(3, True)
        + _field(4, '{"gateway":"stripe"}')
    )
    metadata = _field(1, "tenant") + _field(2, "acme")
    return b"".join(
        [
            _field(1, "evt-1"),
            _field(2, "saga-1"),
            _field(3, "charge-payment"),
            _field(4, "saga.step.failed"),
            _field(5, "1.0"),
            _field(6, timestamp),
            _field(7, "corr-1"),
            _field(8, b'{"order_id":"ORD-42","amount":99.95}'),
            _field(9, b'{"status":"reserved"}'),
            _field(10, b'{"status":"failed"}'),
            _field(11, error),
            _field(12, 1_500_000_001),
            _field(13, 2),
            _field(14, 5),
            _field(15, metadata),
            _field(16, "order-service"),
            _field(17, "payment-service"),
            _field(18, "2.3.1"),
            _field(19, "trace"),
            _field(20, "span"),
            _field(21, "parent"),
        ]
    )


def test_seed_protobuf_event_decodes() -> None:
    event = get_serializer("protobuf").decode(_seed_protobuf_event())
    assert event.id == "evt-1" and event.saga_id == "saga-1" and event.step_id == "charge-payment"
    assert event.type is EventType.SAGA_STEP_FAILED and event.version == "1.0"
    assert event.timestamp == datetime(2024, 5, 1, 10, 20, 30, 123457, tzinfo=UTC)
    assert event.correlation_id == "corr-1"
    assert event.data == {"order_id": "ORD-42", "amount": 99.95}
    assert event.previous_state == {"status": "reserved"}
    assert event.new_state == {"status": "failed"}
    assert event.duration == timedelta(seconds=1, microseconds=500000)
    assert (event.attempt, event.max_attempts) == (2, 5)
    assert event.metadata == {"tenant": "acme"}
    assert (event.source, event.service, event.service_version) == (
        "order-service",
        "payment-service",
        "2.3.1",
    )
    assert (event.trace_id, event.span_id, event.parent_span_id) == ("trace", "span", "parent")
    error = event.error
    assert error is not None
    assert (error.code, error.message, error.retryable) == (
        "PAYMENT_DECLINED",
        "card declined",
        True,
    )
    assert error.details == {"gateway": "stripe"}
    assert error.type is ErrorType.SYSTEM  # the seed sends no type
    assert error.cause is None


def test_protobuf_writes_the_seed_field_numbers() -> None:
    cause = SagaError(code="C", message="c", timestamp=datetime(2024, 1, 1, tzinfo=UTC))
    event = typical_event().replace(
        previous_state={"p": 1},
        new_state={"n": 2},
        parent_span_id="parent",
        instance_id="node-7",
        metadata={"tenant": "acme", "priority": 5},
        error=SagaError(
            code="E",
            message="m",
            type=ErrorType.DATA,
            retryable=True,
            details={"d": 1},
            timestamp=datetime(2024, 1, 1, tzinfo=UTC),
            cause=cause,
        ),
    )
    fields = _read(get_serializer("protobuf").encode(event))
    assert fields[1] == [event.id.encode()]
    assert fields[2] == [event.saga_id.encode()]
    assert fields[3] == [b"reserve-inventory"]
    assert fields[4] == [b"saga.step.completed"]
    assert fields[5] == [b"1.0"]
    assert _read(fields[6][0]) == {1: [1714558830], 2: [123456000]}
    assert fields[7] == [b"req-7f3a2c91"]
    assert json.loads(fields[8][0]) == event.data
    assert json.loads(fields[9][0]) == {"p": 1}
    assert json.loads(fields[10][0]) == {"n": 2}
    error = _read(fields[11][0])
    assert error[1] == [b"E"] and error[2] == [b"m"] and error[3] == [1]
    assert json.loads(error[4][0]) == {"d": 1}
    assert error[5] == [b"data"]  # extensions of SagaError start at 5
    assert _read(error[7][0])[1] == [b"C"]
    assert fields[12] == [42_317_000]
    assert fields[13] == [1] and fields[14] == [3]
    assert [_read(entry) for entry in fields[15]] == [{1: [b"tenant"], 2: [b"acme"]}]
    assert fields[16] == [b"order-service"]
    assert fields[17] == [b"inventory-service"]
    assert fields[18] == [b"1.4.2"]
    assert fields[19] == [event.trace_id.encode()]
    assert fields[20] == [event.span_id.encode()]
    assert fields[21] == [b"parent"]
    assert fields[22] == [b"node-7"]  # sagamesh extension: instance_id
    assert [_read(entry) for entry in fields[23]] == [{1: [b"priority"], 2: [b"5"]}]


@pytest.mark.parametrize("value", [0, 1, 2**31 - 1])
def test_attempt_is_the_same_varint_as_the_seeds_int32(value: int) -> None:
    event = SagaEvent(id="e", saga_id="s", type=EventType.SAGA_STARTED, attempt=value)
    fields = _read(get_serializer("protobuf").encode(event))
    assert fields.get(13, [0]) == [value]
