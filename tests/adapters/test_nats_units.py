"""NATS adapter pieces that need no server: header codec, names, options."""

from __future__ import annotations

import string
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sagamesh_nats import NatsBroker
from sagamesh_nats.naming import check_subject, consumer_name, safe_name, stream_name

from sagamesh.brokers import create_broker
from sagamesh.brokers.nats_wire import KEY, MSG_ID, decode, encode_headers
from sagamesh.errors import ConfigError, SerializationError
from sagamesh.message import Headers, Message

header_names = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=20)


@given(
    headers=st.dictionaries(header_names.filter(lambda n: n not in (KEY, MSG_ID)),
                            st.text(max_size=40), max_size=8),
    key=st.none() | st.text(max_size=30),
    body=st.binary(max_size=200),
)
def test_codec_round_trips_every_header_value_and_key(
    headers: dict[str, str], key: str | None, body: bytes
) -> None:
    message = Message(id="id-1", topic="t.x", key=key, headers=headers, body=body)
    wire = encode_headers(message)
    # What NATS itself would do to a value: it strips surrounding whitespace.
    assert all(v == v.strip() and "\n" not in v and "\r" not in v for v in wire.values())
    back = decode("t.x", body, wire, "fallback")
    assert back == message


def test_message_id_is_the_nats_msg_id_and_a_recovered_copy_is_a_new_one() -> None:
    message = Message(id="evt-7", topic="t", headers={})
    assert encode_headers(message)[MSG_ID] == "evt-7"
    recovered = Message(id="evt-7", topic="t", headers={Headers.DLQ_RECOVERIES: "2"})
    wire = encode_headers(recovered)
    assert wire[MSG_ID] == "evt-7~r2"
    assert decode("t", b"", wire, "x").id == "evt-7"


def test_message_without_msg_id_gets_the_fallback_id() -> None:
    assert decode("t", b"b", {"a": "1"}, "S:42").id == "S:42"
    assert decode("t", b"b", None, "S:43") == Message(id="S:43", topic="t", body=b"b")


@pytest.mark.parametrize("bad", ["", "a b", "a.*", "a.>", ".a", "a.", "a..b", "a\tb"])
def test_invalid_subjects_are_rejected_with_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="not a valid NATS subject"):
        check_subject(bad)


def test_stream_and_consumer_names_are_valid_and_distinct() -> None:
    names = {stream_name("P_", t) for t in ("a.b", "a_b", "a-b", "a.b.c", "a_b_c")}
    assert len(names) == 5
    for name in names:
        assert set(name) <= set(string.ascii_letters + string.digits + "_-")
    assert stream_name("P_", "plain") == "P_plain"
    assert safe_name("x" * 300) != safe_name("x" * 301)
    assert len(safe_name("y" * 500)) < 255
    assert consumer_name("orders", "t.a", shared_stream=False) == "orders"
    assert (consumer_name("orders", "t.a", shared_stream=True)
            != consumer_name("orders", "t.b", shared_stream=True))


def test_unknown_or_invalid_options_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown NATS broker option"):
        NatsBroker("nats://127.0.0.1:4222", ack_wiat=3)
    with pytest.raises(ConfigError, match="storage"):
        NatsBroker("nats://127.0.0.1:4222", storage="disk")
    with pytest.raises(ConfigError, match="idle_heartbeat"):
        NatsBroker("nats://127.0.0.1:4222", idle_heartbeat=10, pull_expires=5)
    with pytest.raises(ConfigError, match="ack_wait"):
        NatsBroker("nats://127.0.0.1:4222", ack_wait="soon")


def test_create_broker_finds_the_adapter_by_scheme() -> None:
    broker = create_broker("nats://127.0.0.1:4222,nats://127.0.0.1:4223", ack_wait=5)
    assert isinstance(broker, NatsBroker)
    assert broker.servers == ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"]
    assert broker.options.ack_wait == 5.0
    assert broker.capabilities.ordered_by_key  # for ordered subscriptions (lease + key hold)
    assert broker.capabilities.delayed_redelivery and broker.capabilities.persistent


@pytest.mark.parametrize("name", ["", "has space", "colon:name", "tab\tname", "ünicode"])
def test_header_names_nats_cannot_carry_are_a_serialization_error(name: str) -> None:
    with pytest.raises(SerializationError, match="header name"):
        encode_headers(Message(id="m", topic="t", headers={name: "v"}))


class _FakeJetStream:
    """``publish_async`` as nats-py's: a PubAck future, answered on the next loop turn unless
    the message id is in ``silent``."""

    def __init__(self, silent: set[str]) -> None:
        import asyncio

        self._publish_async_pending_semaphore = asyncio.Semaphore(16)
        self.silent = silent

    async def publish_async(self, subject: str, payload: bytes = b"", wait_stall: Any = None,
                            headers: dict[str, str] | None = None) -> Any:
        import asyncio

        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if headers is None or headers[MSG_ID] not in self.silent:
            loop.call_soon(future.set_result, "ack")
        return future


def _offline_broker(silent: set[str], **options: Any) -> NatsBroker:
    broker = NatsBroker("nats://127.0.0.1:4222", **options)
    broker._js = _FakeJetStream(silent)  # type: ignore[assignment]
    broker._jsm = object()  # type: ignore[assignment]
    broker._streams["t.x"] = ("S", False)
    return broker


async def test_single_publishes_share_one_puback_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    real_call_at = loop.call_at
    armed: list[float] = []

    def call_at(when: float, callback: Any, *args: Any, **kwargs: Any) -> Any:
        armed.append(when)
        return real_call_at(when, callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_at", call_at)  # call_later goes through call_at too
    broker = _offline_broker(set())
    for n in range(40):
        await broker.publish(Message(id=f"m{n}", topic="t.x", body=b"x"))
    assert len(armed) == 1
    assert not broker._awaiting_acks


async def test_an_unanswered_puback_times_out_between_answered_ones() -> None:
    from sagamesh.errors import PublishTimeoutError

    broker = _offline_broker({"m1", "m3"}, publish_timeout=0.05)
    outcomes: list[str | None] = []
    for n in range(5):
        try:
            await broker.publish(Message(id=f"m{n}", topic="t.x", body=b"x"))
            outcomes.append(None)
        except PublishTimeoutError as exc:
            assert "m1" in str(exc) or "m3" in str(exc)
            outcomes.append("timeout")
    assert outcomes == [None, "timeout", None, "timeout", None]
    assert not broker._awaiting_acks
