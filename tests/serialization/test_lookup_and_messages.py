"""Serializer lookup by name and content type, and the event <-> message envelope."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sagamesh.errors import ConfigError, SerializationError
from sagamesh.events import EventType, SagaEvent
from sagamesh.message import Headers, Message
from sagamesh.serialization import (
    JSON_CONTENT_TYPE,
    PROTOBUF_CONTENT_TYPE,
    SERIALIZER_NAMES,
    Serializer,
    from_message,
    get_serializer,
    serializer_for_content_type,
    to_message,
)
from sagamesh.testing.samples import typical_event
from sagamesh.testing.strategies import saga_events


def test_builtin_serializers_by_name() -> None:
    assert SERIALIZER_NAMES == ("json", "protobuf")
    json_s, proto_s = get_serializer("json"), get_serializer("protobuf")
    assert (json_s.name, json_s.content_type) == ("json", "application/json")
    assert (proto_s.name, proto_s.content_type) == ("protobuf", "application/x-protobuf")
    assert isinstance(json_s, Serializer) and isinstance(proto_s, Serializer)
    assert get_serializer("json") is json_s  # stateless: one shared instance


def test_unknown_serializer_is_a_config_error_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="unknown serializer 'xml'") as caught:
        get_serializer("xml")
    assert caught.value.field == "serializer"
    assert "json, protobuf" in str(caught.value)


@pytest.mark.parametrize(
    ("content_type", "name"),
    [
        (JSON_CONTENT_TYPE, "json"),
        (PROTOBUF_CONTENT_TYPE, "protobuf"),
        ("application/json; charset=utf-8", "json"),
        ("Application/X-Protobuf", "protobuf"),
    ],
)
def test_serializer_for_content_type(content_type: str, name: str) -> None:
    assert serializer_for_content_type(content_type).name == name


def test_unknown_content_type_is_a_serialization_error() -> None:
    with pytest.raises(SerializationError, match="text/xml"):
        serializer_for_content_type("text/xml")


@pytest.mark.parametrize("name", SERIALIZER_NAMES)
def test_to_message_sets_id_key_headers_and_body(name: str) -> None:
    serializer = get_serializer(name)
    event = typical_event()
    message = to_message(event, "saga.events", serializer)
    assert message.id == event.id
    assert message.topic == "saga.events"
    assert message.key == event.saga_id
    assert message.headers == {
        Headers.CONTENT_TYPE: serializer.content_type,
        Headers.EVENT_ID: event.id,
        Headers.EVENT_TYPE: "saga.step.completed",
        Headers.SAGA_ID: event.saga_id,
    }
    assert type(message.headers[Headers.EVENT_TYPE]) is str
    assert message.body == serializer.encode(event)
    assert from_message(message) == event


def test_messages_get_their_own_headers_dict() -> None:
    serializer = get_serializer("json")
    first = to_message(typical_event(), "t", serializer)
    second = to_message(typical_event(), "t", serializer)
    first.headers["traceparent"] = "00-abc"
    assert "traceparent" not in second.headers


def test_from_message_picks_the_serializer_by_content_type() -> None:
    event = typical_event()
    body = get_serializer("protobuf").encode(event)
    message = Message(
        id=event.id, topic="t", body=body, headers={"content-type": "application/x-protobuf"}
    )
    assert from_message(message) == event
    # the same bytes read as JSON are rejected cleanly
    with pytest.raises(SerializationError):
        from_message(
            Message(id=event.id, topic="t", body=body, headers={"content-type": "application/json"})
        )


def test_from_message_defaults_to_json_without_content_type() -> None:
    event = typical_event()
    message = Message(id=event.id, topic="t", body=get_serializer("json").encode(event))
    assert from_message(message) == event


def test_from_message_accepts_bytearray_and_memoryview_bodies() -> None:
    event = typical_event()
    body = get_serializer("json").encode(event)
    for wrapped in (bytearray(body), memoryview(body)):
        message = Message(id=event.id, topic="t", body=wrapped)  # type: ignore[arg-type]
        assert from_message(message) == event


@pytest.mark.parametrize(
    "message",
    [
        Message(id="m", topic="t", body=b"\x00\x01", headers={"content-type": "text/xml"}),
        Message(id="m", topic="t", body=b"not json"),
        Message(
            id="m", topic="t", body=b"\xff", headers={"content-type": "application/x-protobuf"}
        ),
        Message(id="m", topic="t", body="text", headers={}),  # type: ignore[arg-type]
    ],
)
def test_from_message_raises_only_serialization_error(message: Message) -> None:
    with pytest.raises(SerializationError):
        from_message(message)


def test_event_type_given_as_plain_string_still_gives_a_plain_header() -> None:
    event = SagaEvent(id="e", saga_id="s", type="saga.started")  # type: ignore[arg-type]
    message = to_message(event, "t", get_serializer("json"))
    assert message.headers[Headers.EVENT_TYPE] == "saga.started"
    assert from_message(message).type is EventType.SAGA_STARTED


@settings(max_examples=60, deadline=None)
@given(event=saga_events(), name=st.sampled_from(SERIALIZER_NAMES), topic=st.text(min_size=1))
def test_envelope_round_trips_any_event(event: SagaEvent, name: str, topic: str) -> None:
    message = to_message(event, topic, get_serializer(name))
    assert (message.id, message.key, message.topic) == (event.id, event.saga_id, topic)
    assert message.headers[Headers.EVENT_TYPE] == event.type.value
    assert from_message(message) == event
