"""Event model validation, error descriptions and the URL-scheme broker registry."""

from __future__ import annotations

from datetime import UTC

import pytest

from sagamesh.brokers import MemoryBroker, available_schemes, create_broker
from sagamesh.errors import BusinessError, ConfigError, InvalidEventError
from sagamesh.events import ErrorType, EventType, SagaError, SagaEvent


def test_event_defaults() -> None:
    a = SagaEvent(saga_id="s1", type=EventType.SAGA_STARTED)
    b = SagaEvent(saga_id="s1", type=EventType.SAGA_STARTED)
    assert a.id != b.id and len(a.id) == 36
    assert a.timestamp.tzinfo is UTC
    assert a.validate() is a


def test_event_is_immutable() -> None:
    event = SagaEvent(saga_id="s1", type=EventType.SAGA_STARTED)
    with pytest.raises(AttributeError):
        event.saga_id = "other"  # type: ignore[misc]
    assert event.replace(saga_id="s2").saga_id == "s2"


@pytest.mark.parametrize("changes,missing", [
    ({"id": ""}, "id"), ({"saga_id": ""}, "saga_id"), ({"type": ""}, "type")])
def test_missing_required_fields_raise(changes: dict[str, str], missing: str) -> None:
    event = SagaEvent(saga_id="s1", type=EventType.SAGA_STARTED).replace(**changes)
    with pytest.raises(InvalidEventError, match=missing):
        event.validate()


def test_all_event_types_follow_naming() -> None:
    assert len(EventType) == 18
    for member in EventType:
        assert member.name == member.value.upper().replace(".", "_")


def test_saga_error_from_exception_chains_causes() -> None:
    try:
        try:
            raise ConnectionError("db down")
        except ConnectionError as inner:
            raise BusinessError("PAYMENT_DECLINED", "card declined") from inner
    except BusinessError as exc:
        error = SagaError.from_exception(exc)
    assert error.code == "PAYMENT_DECLINED" and error.type is ErrorType.BUSINESS
    assert error.cause is not None and error.cause.type is ErrorType.NETWORK
    assert error.cause.message == "db down"


def test_registry_resolves_every_installed_scheme() -> None:
    assert {"memory", "nats", "amqp", "kafka"} <= set(available_schemes())
    assert isinstance(create_broker("memory://"), MemoryBroker)


def test_unknown_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no broker adapter for scheme 'zmq'") as info:
        create_broker("zmq://h:1")
    assert info.value.field == "broker.url"
    with pytest.raises(ConfigError, match="no scheme"):
        create_broker("localhost:4222")
