"""NATS adapter behaviour beyond the conformance suite, on the shared JetStream server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from sagamesh_nats import NatsBroker

from sagamesh.brokers.base import Delivery
from sagamesh.errors import BrokerUnavailableError
from sagamesh.message import Headers, Message
from sagamesh.testing.conformance import Collector, messages, publish_all
from sagamesh.testing.services import free_port

pytestmark = pytest.mark.nats

FAST: dict[str, Any] = {"reconnect_time_wait": 0.1, "idle_heartbeat": 0.5, "pull_expires": 5.0,
                        "lease_ttl": 2.0}


@pytest.fixture
def prefix() -> str:
    return f"SMA{uuid.uuid4().hex[:8]}_"


@pytest_asyncio.fixture
async def jsm(nats_url: str, prefix: str) -> AsyncIterator[Any]:
    """A raw JetStream manager; deletes this test's streams afterwards."""
    import nats

    nc = await nats.connect(nats_url)
    manager = nc.jsm()
    try:
        yield manager
    finally:
        for info in await manager.streams_info():
            if info.config.name and info.config.name.startswith((prefix, f"KV_{prefix}")):
                await manager.delete_stream(info.config.name)
        await nc.close()


@pytest_asyncio.fixture
async def broker(nats_url: str, prefix: str, jsm: Any) -> AsyncIterator[NatsBroker]:
    async with NatsBroker(nats_url, stream_prefix=prefix, **FAST) as b:
        yield b


async def test_publish_creates_a_file_stream_named_from_the_topic(
    broker: NatsBroker, jsm: Any, prefix: str, unique: str
) -> None:
    topic = f"orders.{unique}"
    await broker.publish(Message(id="1", topic=topic, body=b"x"))
    info = await jsm.stream_info(await jsm.find_stream_name_by_subject(topic))
    assert info.config.name.startswith(prefix) and "." not in info.config.name
    assert info.config.subjects == [topic]
    assert info.config.storage == "file"
    assert info.config.duplicate_window == 120.0
    assert info.state.messages == 1


async def test_same_message_id_is_stored_once(broker: NatsBroker, jsm: Any, unique: str) -> None:
    topic = f"dedup.{unique}"
    message = Message(id=f"evt-{unique}", topic=topic, body=b"once")
    await broker.publish(message)
    await broker.publish(message)
    assert await broker.publish_many([message, message]) == [None, None]
    recovered = Message(id=message.id, topic=topic, body=b"once",
                        headers={Headers.DLQ_RECOVERIES: "1"})
    await broker.publish(recovered)  # a DLQ recovery is a new message on purpose
    info = await jsm.stream_info(await jsm.find_stream_name_by_subject(topic))
    assert info.state.messages == 2
    collector = Collector()
    await broker.subscribe(topic, collector.handler(), group="g")
    await collector.wait_until(lambda: len(collector.acked) == 2, "two messages", 30)
    assert [r.message.id for r in collector.acked] == [message.id, message.id]


async def test_max_in_flight_bounds_concurrent_handlers(broker: NatsBroker, unique: str) -> None:
    topic = f"bound.{unique}"
    running = 0
    peak = 0
    release = asyncio.Event()

    async def hold(delivery: Delivery) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1

    collector = Collector()
    await broker.subscribe(topic, collector.handler(on_message=hold), group="g",
                           max_in_flight=3)
    batch = messages(topic, 20, keys=20)
    await publish_all(broker, batch)
    await collector.wait_until(lambda: len(collector.received) >= 3, "3 handlers", 30)
    assert not await collector.observe(lambda: len(collector.received) > 3, 0.5)
    assert peak == 3
    release.set()
    await collector.wait_acked({m.id for m in batch}, 30)
    assert peak == 3


async def test_slow_handler_is_kept_alive_past_ack_wait(
    nats_url: str, prefix: str, jsm: Any, unique: str
) -> None:
    async with NatsBroker(nats_url, stream_prefix=prefix, ack_wait=1.0, **FAST) as broker:
        topic = f"slow.{unique}"

        async def slow(delivery: Delivery) -> None:
            await asyncio.sleep(2.5)

        collector = Collector()
        await broker.subscribe(topic, collector.handler(on_message=slow), group="g")
        message = Message(id="slow-1", topic=topic)
        await broker.publish(message)
        await collector.wait_acked({message.id}, 30)
        assert collector.attempts_of(message.id) == [1]  # +WPI prevented a redelivery


async def test_existing_wildcard_stream_is_used_with_per_topic_consumers(
    broker: NatsBroker, jsm: Any, prefix: str, unique: str
) -> None:
    base = f"shared.{unique}"
    await jsm.add_stream(name=f"{prefix}wild", subjects=[f"{base}.>"])
    collectors = {t: Collector() for t in (f"{base}.a", f"{base}.b")}
    for topic, collector in collectors.items():
        await broker.subscribe(topic, collector.handler(), group="same-group")
    for topic in collectors:
        await broker.publish(Message(id=f"{topic}-1", topic=topic))
    for topic, collector in collectors.items():
        await collector.wait_acked({f"{topic}-1"}, 30)
        assert collector.received_ids() == {f"{topic}-1"}
    names = [info.config.name for info in await jsm.streams_info()
             if info.config.name.startswith(prefix)]
    assert names == [f"{prefix}wild"], "no extra stream may be created for covered topics"
    consumers = await jsm.consumers_info(f"{prefix}wild")
    assert len(consumers) == 2


async def test_ephemeral_consumer_is_removed_on_close(
    broker: NatsBroker, jsm: Any, unique: str
) -> None:
    topic = f"eph.{unique}"
    collector = Collector()
    sub = await broker.subscribe(topic, collector.handler())
    stream = await jsm.find_stream_name_by_subject(topic)
    assert len(await jsm.consumers_info(stream)) == 1
    await broker.publish(Message(id="e1", topic=topic))
    await collector.wait_acked({"e1"}, 30)
    await sub.close()
    assert await jsm.consumers_info(stream) == []


async def test_health_reports_round_trip_and_server(broker: NatsBroker) -> None:
    health = await broker.health()
    assert health.healthy and health.broker == "nats"
    assert health.latency is not None and 0 < health.latency < 5
    assert str(health.extra["server_version"]).count(".") == 2


async def test_publish_many_keeps_a_bounded_number_of_acks_in_flight(
    nats_url: str, prefix: str, jsm: Any, unique: str
) -> None:
    async with NatsBroker(nats_url, stream_prefix=prefix, max_pending_publishes=16) as broker:
        topic = f"bounded.{unique}"
        await broker.publish(Message(id="warm", topic=topic))  # stream exists
        inbox = broker._inbox
        assert inbox is not None
        peak = 0
        done = False

        async def sample() -> None:
            nonlocal peak
            while not done:
                peak = max(peak, inbox.pending)
                await asyncio.sleep(0)

        sampler = asyncio.create_task(sample())
        results = await broker.publish_many(messages(topic, 2000, keys=7))
        done = True
        await sampler
        assert results == [None] * 2000
        assert 1 < peak <= 16, f"peak PubAcks in flight: {peak}"


async def test_connect_to_nothing_fails_fast_with_a_typed_error() -> None:
    broker = NatsBroker(f"nats://127.0.0.1:{free_port()}", connect_timeout=0.5)
    with pytest.raises(BrokerUnavailableError, match="cannot connect to NATS"):
        await broker.connect()
    await broker.close()  # closing a never-connected broker is fine


@pytest.mark.parametrize("delay", [None, 0.2])
async def test_ordered_subscription_keeps_key_order_across_nacks(
    broker: NatsBroker, unique: str, delay: float | None
) -> None:
    """One ordered subscription: a nacked message comes back before the rest of its key."""
    topic = f"ordnack.{unique}"
    batch = messages(topic, 120, keys=4)
    nacked = {batch[i].id for i in (5, 6, 40, 41, 42, 97)}

    async def nack_first(delivery: Delivery) -> None:
        if delivery.message.id in nacked and delivery.attempt == 1:
            await delivery.nack(delay=delay)

    collector = Collector()
    await broker.subscribe(topic, collector.handler(on_message=nack_first), group="g",
                           max_in_flight=8, ordered=True)
    await publish_all(broker, batch)
    await collector.wait_acked({m.id for m in batch}, 60)
    position = {m.id: i for i, m in enumerate(batch)}
    for key in {m.key for m in batch}:
        order = [position[r.message.id] for r in collector.acked if r.message.key == key]
        assert order == sorted(order) and len(order) == 30, f"key {key}: {order}"
    for message_id in nacked:
        assert collector.attempts_of(message_id) == [1, 2]


async def _wait_for(predicate: Any, what: str, within: float = 30.0) -> None:
    """Poll a condition driven by the lease's timers (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("abrupt", [False, True])
async def test_ordered_group_has_one_active_member_and_fails_over_in_order(
    nats_url: str, prefix: str, jsm: Any, unique: str, abrupt: bool
) -> None:
    topic, group = f"lease.{unique}", f"g-{unique}"
    first = NatsBroker(nats_url, stream_prefix=prefix, **FAST)
    second = NatsBroker(nats_url, stream_prefix=prefix, **FAST)
    await first.connect()
    await second.connect()
    try:
        collector = Collector()
        sub_a = await first.subscribe(topic, collector.handler("a"), group=group, ordered=True)
        sub_b = await second.subscribe(topic, collector.handler("b"), group=group, ordered=True)
        assert (sub_a.active, sub_b.active) == (True, False)
        batch = messages(topic, 200, keys=5)
        await publish_all(first, batch[:100])
        await collector.wait_acked({m.id for m in batch[:100]}, 30)
        assert collector.acked_by("b") == [], "the standby member must not consume"
        if abrupt:  # the holder vanishes without releasing: the lease expires (lease_ttl 2 s)
            assert first._nc is not None
            await first._nc.close()
        else:
            await sub_a.close()
        await _wait_for(lambda: sub_b.active, "the standby to take the lease")
        await publish_all(second, batch[100:])
        await collector.wait_acked({m.id for m in batch}, 30)
        assert set(collector.acked_by("b")) >= {m.id for m in batch[100:]}
        position = {m.id: i for i, m in enumerate(batch)}
        for key in {m.key for m in batch}:
            order = [position[r.message.id] for r in collector.acked if r.message.key == key]
            assert order == sorted(order), f"key {key}: {order}"
    finally:
        await second.close()
        await first.close()


async def test_oversize_message_is_a_typed_error_and_the_rest_of_a_batch_goes_through(
    broker: NatsBroker, unique: str
) -> None:
    from sagamesh.errors import SerializationError

    topic = f"big.{unique}"
    huge = Message(id="huge", topic=topic, body=bytes(2 * 1024 * 1024))
    with pytest.raises(SerializationError, match="max_payload"):
        await broker.publish(huge)
    ok = Message(id="ok", topic=topic, body=b"fine")
    results = await broker.publish_many([ok, huge, Message(id="bad", topic=topic,
                                                           headers={"a b": "v"})])
    assert results[0] is None
    assert isinstance(results[1], SerializationError)
    assert isinstance(results[2], SerializationError)
    collector = Collector()
    await broker.subscribe(topic, collector.handler(), group="g")
    await collector.wait_acked({"ok"}, 30)
    assert collector.received_ids() == {"ok"}


async def test_lease_refresh_follows_a_shorter_bucket_ttl(
    nats_url: str, prefix: str, jsm: Any, unique: str
) -> None:
    """A lease bucket created with a short TTL keeps its TTL; later members refresh in time."""
    import nats

    options = {**FAST, "lease_ttl": 1.0}
    async with NatsBroker(nats_url, stream_prefix=prefix, **options) as first:
        await first.subscribe(f"ttl.a.{unique}", Collector().handler(), group="g", ordered=True)
    options["lease_ttl"] = 9.0
    nc = await nats.connect(nats_url)
    try:
        kv = await nc.jetstream().key_value(f"{prefix}leases")
        async with NatsBroker(nats_url, stream_prefix=prefix, **options) as holder:
            held = await holder.subscribe(f"ttl.b.{unique}", Collector().handler(), group="g",
                                          ordered=True)
            assert held.active and held._lease is not None
            revisions = []
            for _ in range(15):  # 3 s: the 1 s bucket TTL passes three times
                await asyncio.sleep(0.2)
                revisions.append((await kv.get(held._lease.key)).revision)  # never expired
            assert held.active
            assert len(set(revisions)) >= 6, f"lease refreshed too rarely: {revisions}"
    finally:
        await nc.close()


async def test_a_missing_puback_times_out_single_and_batch_publishes(
    nats_url: str, prefix: str, jsm: Any, unique: str
) -> None:
    """A stream with ``no_ack`` stores messages but never answers: every publish must fail
    with PublishTimeoutError after ``publish_timeout``, and nothing may stay in flight."""
    from nats.js.api import StreamConfig

    from sagamesh.errors import PublishTimeoutError

    topic = f"silent.{unique}"
    await jsm.add_stream(StreamConfig(name=f"{prefix}silent", subjects=[topic], no_ack=True))
    async with NatsBroker(nats_url, stream_prefix=prefix, publish_timeout=0.3) as broker:
        with pytest.raises(PublishTimeoutError):
            await broker.publish(Message(id="one", topic=topic, body=b"x"))
        results = await broker.publish_many(messages(topic, 5))
        assert [type(r) for r in results] == [PublishTimeoutError] * 5
        assert broker._inbox is not None and broker._inbox.pending == 0
        info = await jsm.stream_info(f"{prefix}silent")
        assert info.state.messages == 6  # stored all the same: only the answer is missing


async def test_jetstream_rejections_and_a_deleted_stream_reach_the_publisher(
    nats_url: str, prefix: str, jsm: Any, unique: str
) -> None:
    """The PubAck inbox hands on what JetStream answers: an error for the one message it
    refused (the rest of the batch is stored), and for a stream deleted behind the broker's
    back the no-responders status, on which the publish creates the stream again."""
    from nats.js.api import DiscardPolicy, StreamConfig

    topic = f"full.{unique}"
    await jsm.add_stream(StreamConfig(name=f"{prefix}full", subjects=[topic], max_msgs=2,
                                      discard=DiscardPolicy.NEW))
    async with NatsBroker(nats_url, stream_prefix=prefix) as broker:
        results = await broker.publish_many(messages(topic, 3))
        assert results[:2] == [None, None]
        assert isinstance(results[2], BrokerUnavailableError)
        assert "maximum messages" in str(results[2])
        with pytest.raises(BrokerUnavailableError, match=r"rejected one: .*maximum messages"):
            await broker.publish(Message(id="one", topic=topic))
        await jsm.delete_stream(f"{prefix}full")
        await broker.publish(Message(id="again", topic=topic))
        stream = await jsm.find_stream_name_by_subject(topic)
        assert stream != f"{prefix}full"  # the broker's own, created on the 503 answer
        assert (await jsm.stream_info(stream)).state.messages == 1
