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


class _FakeMsg:
    def __init__(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        self.subject, self.data, self.headers = subject, data, headers


class _FakeClient:
    """The parts of nats-py's Client that PubAckInbox writes to; every flush "sends" the
    queued HPUB frames and answers each on the next loop turn with a PubAck, unless its
    ``Nats-Msg-Id`` is in ``silent`` (no answer) or in ``rejected`` (a JetStream error)."""

    def __init__(self, silent: set[str], rejected: set[str] | None = None) -> None:
        import asyncio

        self.silent, self.rejected = silent, rejected or set()
        self._pending: list[bytes] = []
        self._pending_data_size = 0
        self._flush_queue: asyncio.Queue[Any] = asyncio.Queue()
        self._max_payload = 1024 * 1024
        self._max_pending_size = 2 * 1024 * 1024
        self.is_connected, self.is_draining = True, False
        self.frames: list[tuple[str, str, bytes, bytes]] = []  # subject, reply, headers, body
        self.cb: Any = None

    def new_inbox(self) -> str:
        return "_INBOX.fake"

    async def subscribe(self, subject: str, cb: Any) -> object:
        assert subject == "_INBOX.fake.*"
        self.cb = cb
        return object()

    async def _flush_pending(self, force_flush: bool = False) -> None:
        import asyncio

        data = b"".join(self._pending)
        self._pending, self._pending_data_size = [], 0
        loop = asyncio.get_running_loop()
        while data:
            line, _, data = data.partition(b"\r\n")
            op, subject, reply, hlen, size = line.decode().split(" ")
            assert op == "HPUB"
            headers, body = data[:int(hlen)], data[int(hlen):int(size)]
            assert data[int(size):int(size) + 2] == b"\r\n"
            data = data[int(size) + 2:]
            self.frames.append((subject, reply, headers, body))
            msg_id = headers.split(b"Nats-Msg-Id: ")[1].split(b"\r\n")[0].decode()
            if msg_id in self.rejected:
                answer = b'{"error":{"code":400,"err_code":10077,"description":"full"}}'
            elif msg_id in self.silent:
                continue
            else:
                answer = b'{"stream":"S","seq":1}'
            loop.call_soon(lambda m=_FakeMsg(reply, answer): loop.create_task(self.cb(m)))


async def _offline_broker(silent: set[str], rejected: set[str] | None = None,
                          **options: Any) -> NatsBroker:
    from sagamesh_nats.publisher import PubAckInbox

    broker = NatsBroker("nats://127.0.0.1:4222", **options)
    client = _FakeClient(silent, rejected)
    broker._nc = client  # type: ignore[assignment]
    broker._inbox = PubAckInbox(client, broker.options.max_pending_publishes)  # type: ignore[arg-type]
    await broker._inbox.start()
    broker._js = object()  # type: ignore[assignment]
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
    broker = await _offline_broker(set())
    for n in range(40):
        await broker.publish(Message(id=f"m{n}", topic="t.x", body=b"x"))
    assert len(armed) == 1
    assert broker._inbox is not None and broker._inbox.pending == 0


async def test_an_unanswered_puback_times_out_between_answered_ones() -> None:
    from sagamesh.errors import PublishTimeoutError

    broker = await _offline_broker({"m1", "m3"}, publish_timeout=0.05)
    outcomes: list[str | None] = []
    for n in range(5):
        try:
            await broker.publish(Message(id=f"m{n}", topic="t.x", body=b"x"))
            outcomes.append(None)
        except PublishTimeoutError as exc:
            assert "m1" in str(exc) or "m3" in str(exc)
            outcomes.append("timeout")
    assert outcomes == [None, "timeout", None, "timeout", None]
    assert broker._inbox is not None and broker._inbox.pending == 0


async def test_frames_carry_the_header_block_and_body_with_one_reply_each() -> None:
    broker = await _offline_broker(set())
    batch = [Message(id=f"b{n}", topic="t.x", key=f"k{n % 3}", body=b"p%d" % n,
                     headers={Headers.EVENT_TYPE: "Made", "x-odd": " spaced "})
             for n in range(50)]
    assert await broker.publish_many(batch) == [None] * 50
    client = broker._nc
    assert isinstance(client, _FakeClient)
    assert len({reply for _, reply, _, _ in client.frames}) == 50
    for message, (subject, _, block, body) in zip(batch, client.frames, strict=True):
        assert subject == "t.x" and body == message.body
        lines = block.decode().split("\r\n")
        assert lines[0] == "NATS/1.0" and lines[-2:] == ["", ""]
        wire = dict(line.split(": ", 1) for line in lines[1:-2])
        assert wire == encode_headers(message)
        assert decode("t.x", body, wire, "?") == message


async def test_a_jetstream_error_answer_fails_that_publish_only() -> None:
    from sagamesh.errors import BrokerUnavailableError

    broker = await _offline_broker(set(), rejected={"r2"})
    with pytest.raises(BrokerUnavailableError, match=r"rejected r2: .*full"):
        await broker.publish(Message(id="r2", topic="t.x", body=b"x"))
    results = await broker.publish_many([Message(id=f"r{n}", topic="t.x") for n in range(4)])
    assert [type(r).__name__ for r in results] == [
        "NoneType", "NoneType", "BrokerUnavailableError", "NoneType"]


async def test_a_full_window_that_never_drains_times_out_the_rest_of_the_batch() -> None:
    from sagamesh.errors import PublishTimeoutError

    silent = {f"s{n}" for n in range(4)}
    broker = await _offline_broker(silent, max_pending_publishes=4, publish_timeout=0.1)
    results = await broker.publish_many([Message(id=f"s{n}", topic="t.x") for n in range(10)])
    assert all(isinstance(r, PublishTimeoutError) for r in results)
    assert "no PubAck for 4 publishes" in str(results[-1])
    client = broker._nc
    assert isinstance(client, _FakeClient) and len(client.frames) == 4  # nothing past the window
    assert broker._inbox is not None and broker._inbox.pending == 0
    # the window is free again: later publishes go through
    assert await broker.publish_many([Message(id=f"o{n}", topic="t.x") for n in range(9)]) == [
        None] * 9


async def test_a_dropped_connection_fails_the_publishes_awaiting_their_pubacks() -> None:
    import asyncio

    from sagamesh.errors import BrokerUnavailableError

    broker = await _offline_broker({"lost"}, publish_timeout=30)
    publishing = asyncio.ensure_future(broker.publish(Message(id="lost", topic="t.x")))
    await asyncio.sleep(0.01)
    assert broker._inbox is not None and broker._inbox.pending == 1
    await broker._on_disconnected()
    with pytest.raises(BrokerUnavailableError, match="connection lost"):
        await asyncio.wait_for(publishing, 1)
    assert broker._inbox.pending == 0


def test_a_nats_client_without_the_internals_the_inbox_writes_to_is_refused_by_name() -> None:
    from sagamesh_nats.publisher import PubAckInbox

    from sagamesh.errors import BrokerUnavailableError

    client = _FakeClient(set())
    del client._flush_queue
    with pytest.raises(BrokerUnavailableError, match=r"lacks _flush_queue: .*nats-py >= 2\.9"):
        PubAckInbox(client, 8)  # type: ignore[arg-type]
