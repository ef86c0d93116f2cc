"""Kafka adapter behaviour beyond the conformance suite, against tansu (Kafka protocol).

Every test uses its own topics and groups (``unique``); tests that stop the broker run a private
tansu of their own.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from sagamesh_kafka import ID_HEADER, KafkaBroker

from sagamesh.brokers.base import Delivery
from sagamesh.errors import BrokerUnavailableError, ConfigError, TransactionError
from sagamesh.message import Message
from sagamesh.testing.conformance import Collector
from sagamesh.testing.services import TansuProcess, start_tansu

pytestmark = pytest.mark.kafka

TIMEOUT = 30.0
FAST: dict[str, Any] = {
    "session_timeout": 2.5,
    "heartbeat_interval": 0.2,
    "rebalance_timeout": 3.0,
    "revoke_timeout": 2.0,
    "transaction_probe_timeout": 3.0,
}


def _msg(topic: str, i: int = 0, *, key: str | None = "k",
         headers: dict[str, str] | None = None) -> Message:
    return Message(id=str(uuid.uuid4()), topic=topic, key=key,
                   headers={"seq": str(i), **(headers or {})}, body=f"body-{i}".encode())


Connect = Callable[..., Awaitable[KafkaBroker]]


@pytest_asyncio.fixture
async def connect(kafka_bootstrap: str) -> AsyncIterator[Connect]:
    brokers: list[KafkaBroker] = []

    async def make(bootstrap: str | None = None, **options: Any) -> KafkaBroker:
        broker = KafkaBroker(f"kafka://{bootstrap or kafka_bootstrap}", **{**FAST, **options})
        brokers.append(broker)
        await broker.connect()
        return broker

    yield make
    await asyncio.gather(*(b.close() for b in brokers), return_exceptions=True)


@pytest_asyncio.fixture
async def private_tansu() -> AsyncIterator[TansuProcess]:
    process = await asyncio.to_thread(start_tansu)
    yield process
    await asyncio.to_thread(_crash, process)


def _crash(tansu: TansuProcess) -> None:
    """Kill at once: tansu delays a SIGTERM by seconds while clients are connected."""
    if tansu.process.poll() is None:
        tansu.process.kill()
        tansu.process.wait(10)


def _crash_and_restart(tansu: TansuProcess) -> None:
    _crash(tansu)
    tansu.restart()


# -- wire mapping -------------------------------------------------------------------------------


async def test_round_trip_keeps_id_and_headers_and_hides_the_id_header(
    connect: Connect, kafka_bootstrap: str, unique: str
) -> None:
    broker = await connect()
    topic = f"kx.wire.{unique}"
    sent = _msg(topic, headers={"content-type": "application/json", "x-u": "東京"})
    collector = Collector()
    await broker.subscribe(topic, collector.handler(), group=f"g-{unique}")
    await broker.publish(sent)
    await collector.wait_acked({sent.id}, TIMEOUT)
    got = collector.acked[0].message
    assert got == sent  # id, key, headers and body exactly; the id header is not exposed
    # On the wire the id travels as a Kafka header and the key is the Kafka key.
    raw = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap,
                           auto_offset_reset="earliest")
    await raw.start()
    try:
        record = await asyncio.wait_for(raw.getone(), TIMEOUT)
    finally:
        await raw.stop()
    assert (ID_HEADER, sent.id.encode()) in list(record.headers)
    assert record.key == b"k" and record.value == sent.body


async def test_topics_are_created_with_the_configured_partitions(
    connect: Connect, kafka_bootstrap: str, unique: str
) -> None:
    broker = await connect(partitions=5)
    topic = f"kx.parts.{unique}"
    await broker.publish(_msg(topic))
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert len(described[0]["partitions"]) == 5


async def test_same_key_same_partition_and_keys_spread_over_partitions(
    connect: Connect, unique: str
) -> None:
    broker = await connect(partitions=3)
    topic = f"kx.keys.{unique}"
    batch = [_msg(topic, i, key=f"saga-{i % 12}") for i in range(120)]
    partitions: dict[str, set[int | None]] = {}

    async def record(delivery: Delivery) -> None:
        partitions.setdefault(delivery.message.key or "", set()).add(delivery.partition)

    collector = Collector()
    await broker.subscribe(topic, collector.handler(on_message=record), group=f"g-{unique}")
    assert all(r is None for r in await broker.publish_many(batch))
    await collector.wait_acked({m.id for m in batch}, TIMEOUT)
    assert all(len(p) == 1 for p in partitions.values()), partitions
    assert len(set().union(*partitions.values())) > 1


async def test_publish_many_reports_each_message_in_order(
    connect: Connect, unique: str
) -> None:
    broker = await connect(publish_window=7)
    good, bad = f"kx.many.{unique}", "no spaces allowed"
    batch = [_msg(bad if i % 10 == 3 else good, i) for i in range(100)]
    results = await broker.publish_many(batch)
    assert len(results) == 100
    for message, result in zip(batch, results, strict=True):
        if message.topic == bad:
            assert isinstance(result, ConfigError)
        else:
            assert result is None
    collector = Collector()
    await broker.subscribe(good, collector.handler(), group=f"g-{unique}")
    await collector.wait_acked({m.id for m in batch if m.topic == good}, TIMEOUT)
    with pytest.raises(ConfigError):
        await broker.publish(_msg(bad))


async def test_subscriptions_without_a_group_each_read_everything(
    connect: Connect, unique: str
) -> None:
    broker = await connect()
    topic = f"kx.nogroup.{unique}"
    before = [_msg(topic, i, key=f"k{i}") for i in range(20)]
    assert all(r is None for r in await broker.publish_many(before))
    readers = [Collector(), Collector()]
    for reader in readers:
        await broker.subscribe(topic, reader.handler())  # group=None: no join, no commits
    after = [_msg(topic, 100 + i, key=f"k{i}") for i in range(20)]
    assert all(r is None for r in await broker.publish_many(after))
    everything = {m.id for m in before + after}
    for reader in readers:
        await reader.wait_acked(everything, TIMEOUT)
        assert len(reader.acked) == 40


# -- commits --------------------------------------------------------------------------------------


async def test_commit_stops_at_the_first_unsettled_offset(
    connect: Connect, unique: str
) -> None:
    """Offset 0 is held unsettled while 1..9 are acked: after the member leaves, the group
    resumes at 0, so the held message is not lost (1..9 come again: at-least-once)."""
    broker = await connect(partitions=1, commit_interval=0.05, session_timeout=2.0)
    topic, group = f"kx.commit.{unique}", f"g-{unique}"
    batch = [_msg(topic, i) for i in range(10)]
    hold = asyncio.Event()

    async def hold_first(delivery: Delivery) -> None:
        if delivery.message.id == batch[0].id:
            await hold.wait()

    first = Collector()
    sub = await broker.subscribe(topic, first.handler(on_message=hold_first), group=group)
    await broker.publish_many(batch)
    await first.wait_acked({m.id for m in batch[1:]}, TIMEOUT)
    await asyncio.sleep(0.3)  # several commit intervals pass: nothing may be committed past 0
    await sub.close()
    assert batch[0].id not in first.acked_ids()
    second = Collector()
    await broker.subscribe(topic, second.handler(), group=group)
    await second.wait_acked({m.id for m in batch}, TIMEOUT)
    assert [r.message.id for r in second.acked] == [m.id for m in batch]


async def test_acked_and_rejected_offsets_are_committed(
    connect: Connect, unique: str
) -> None:
    broker = await connect(partitions=1, session_timeout=2.0)
    topic, group = f"kx.rej.{unique}", f"g-{unique}"
    batch = [_msg(topic, i) for i in range(6)]

    async def reject_odd(delivery: Delivery) -> None:
        if int(delivery.message.headers["seq"]) % 2:
            await delivery.reject()

    first = Collector()
    sub = await broker.subscribe(topic, first.handler(on_message=reject_odd), group=group)
    await broker.publish_many(batch)
    await first.wait_until(lambda: len(first.received) == 6, "6 deliveries", TIMEOUT)
    await sub.close()
    later = _msg(topic, 99)
    await broker.publish(later)
    second = Collector()
    await broker.subscribe(topic, second.handler(), group=group)
    await second.wait_acked({later.id}, TIMEOUT)
    assert second.received_ids() == {later.id}


# -- redelivery and ordering ---------------------------------------------------------------------


async def test_unordered_delayed_nack_lets_later_messages_pass(
    connect: Connect, unique: str
) -> None:
    broker = await connect(partitions=1)
    topic = f"kx.unord.{unique}"
    first, second = _msg(topic, 0), _msg(topic, 1)

    async def nack_first(delivery: Delivery) -> None:
        if delivery.message.id == first.id and delivery.attempt == 1:
            await delivery.nack(delay=1.0)

    collector = Collector()
    await broker.subscribe(topic, collector.handler(on_message=nack_first), group=f"g-{unique}")
    await broker.publish_many([first, second])
    await collector.wait_acked({first.id, second.id}, TIMEOUT)
    assert [r.message.id for r in collector.acked] == [second.id, first.id]
    assert collector.attempts_of(first.id) == [1, 2]
    assert collector.acked[1].at - collector.received[0].at >= 0.95


async def test_ordered_delayed_nack_holds_the_key_only(
    connect: Connect, unique: str
) -> None:
    broker = await connect(partitions=1)
    topic = f"kx.ord.{unique}"
    a1, a2, b1 = _msg(topic, 0, key="a"), _msg(topic, 1, key="a"), _msg(topic, 2, key="b")

    async def nack_a1(delivery: Delivery) -> None:
        if delivery.message.id == a1.id and delivery.attempt < 3:
            await delivery.nack(delay=0.3)

    collector = Collector()
    await broker.subscribe(topic, collector.handler(on_message=nack_a1), group=f"g-{unique}",
                           ordered=True)
    await broker.publish_many([a1, a2, b1])
    await collector.wait_acked({a1.id, a2.id, b1.id}, TIMEOUT)
    order = [r.message.id for r in collector.acked]
    assert order == [b1.id, a1.id, a2.id]  # b (same partition, other key) was not held
    assert collector.attempts_of(a1.id) == [1, 2, 3]
    assert collector.attempts_of(a2.id) == [1]


async def test_full_buffer_waits_for_room_without_polling(connect: Connect, unique: str) -> None:
    """A full buffer neither pauses nor polls while handlers catch up: a poll of a paused
    partition throws away the records aiokafka prefetched for it."""
    broker = await connect(partitions=1, max_buffered=20)
    topic = f"kx.buffer.{unique}"
    release = asyncio.Event()
    peak = 0

    async def blocked(delivery: Delivery) -> None:
        nonlocal peak
        peak = max(peak, len(sub._dispatch.live))
        await release.wait()

    collector = Collector()
    sub = await broker.subscribe(topic, collector.handler(on_message=blocked),
                                 group=f"g-{unique}", max_in_flight=4)
    batch = [_msg(topic, i, key=None) for i in range(300)]
    await broker.publish_many(batch)
    await collector.wait_until(lambda: len(collector.received) >= 4, "4 deliveries", TIMEOUT)
    polls = 0
    getmany = sub._consumer.getmany

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal polls
        polls += 1
        return await getmany(*args, **kwargs)

    sub._consumer.getmany = counted  # type: ignore[method-assign]
    await asyncio.sleep(1.5)
    assert len(sub._dispatch.live) <= 20 and len(collector.received) == 4
    assert polls == 0 and not sub._consumer.paused()
    release.set()
    await collector.wait_acked({m.id for m in batch}, TIMEOUT)
    assert peak <= 20


async def test_full_buffer_polls_paused_so_slow_handlers_keep_the_member(
    connect: Connect, unique: str
) -> None:
    """Handlers busier than max_poll_interval: the fetcher polls (paused) every third of it,
    so aiokafka does not leave the group and nothing is handed over twice."""
    broker = await connect(partitions=1, max_buffered=8, max_poll_interval=1.2)
    topic = f"kx.keepalive.{unique}"
    release = asyncio.Event()

    async def blocked(delivery: Delivery) -> None:
        await release.wait()

    collector = Collector()
    sub = await broker.subscribe(topic, collector.handler(on_message=blocked),
                                 group=f"g-{unique}", max_in_flight=2)
    batch = [_msg(topic, i, key=None) for i in range(40)]
    await broker.publish_many(batch)
    await collector.wait_until(lambda: len(collector.received) >= 2, "2 deliveries", TIMEOUT)
    assigned = 0  # from here on: the group join is done
    on_assigned = sub._assigned

    def count_assigned(tps: list[Any]) -> None:
        nonlocal assigned
        assigned += 1
        on_assigned(tps)

    sub._assigned = count_assigned  # type: ignore[method-assign]
    await asyncio.sleep(3.0)  # 2.5 x max_poll_interval with every handler busy
    assert sub._consumer.paused()
    release.set()
    await collector.wait_acked({m.id for m in batch}, TIMEOUT)
    await asyncio.sleep(0.5)
    assert sorted(r.message.id for r in collector.received) == sorted(m.id for m in batch)
    assert assigned == 0  # no rebalance: the member never left


async def test_fetch_max_wait_reaches_the_consumer(connect: Connect, unique: str) -> None:
    broker = await connect(fetch_max_wait=0.05)
    sub = await broker.subscribe(f"kx.fmw.{unique}", Collector().handler(),
                                 group=f"g-{unique}")
    assert sub._consumer._fetch_max_wait_ms == 50
    default = await connect()
    sub = await default.subscribe(f"kx.fmw2.{unique}", Collector().handler(),
                                  group=f"g2-{unique}")
    assert sub._consumer._fetch_max_wait_ms == 100


# -- lifecycle ------------------------------------------------------------------------------------


async def test_close_cancels_every_owned_task(connect: Connect, unique: str) -> None:
    broker = await connect()
    topic = f"kx.tasks.{unique}"
    started = asyncio.Event()

    async def forever(delivery: Delivery) -> None:
        started.set()
        await asyncio.Event().wait()

    await broker.subscribe(topic, forever, group=f"g-{unique}")
    await broker.subscribe(topic, forever)  # group None: a private reader
    await broker.publish(_msg(topic))
    await asyncio.wait_for(started.wait(), TIMEOUT)
    await asyncio.gather(broker.close(), broker.close())
    left = [t for t in asyncio.all_tasks()
            if t.get_name().startswith(("kafka-fetch", "kafka-commit", "kafka-sub"))]
    assert not left, left
    assert not (await broker.health()).healthy
    with pytest.raises(BrokerUnavailableError):
        await broker.subscribe(topic, forever)


async def test_health_reports_latency_and_broker_loss(
    private_tansu: TansuProcess, connect: Connect
) -> None:
    broker = await connect(private_tansu.bootstrap, request_timeout=1.0)
    health = await broker.health()
    assert health.healthy and health.latency is not None and health.latency < 1.0
    assert health.extra["brokers"] == 1
    await asyncio.to_thread(_crash, private_tansu)
    assert not (await broker.health()).healthy


async def test_transactions_are_detected_as_absent_on_tansu(
    connect: Connect, kafka_bootstrap: str
) -> None:
    broker = await connect()
    assert broker.capabilities.native_transactions is False
    with pytest.raises(TransactionError):
        broker.transaction()
    required = KafkaBroker(f"kafka://{kafka_bootstrap}", transactions="on", **FAST)
    with pytest.raises(ConfigError):
        await required.connect()
    off = await connect(transactions="off")
    assert off.capabilities.native_transactions is False


async def test_clients_survive_a_real_tansu_restart(
    private_tansu: TansuProcess, connect: Connect, unique: str
) -> None:
    """A tansu process restart (memory storage: the broker comes back empty): the producer
    and the consumer group reconnect on their own and carry on with new messages."""
    publisher = await connect(private_tansu.bootstrap, request_timeout=5.0)
    consumer = await connect(private_tansu.bootstrap, request_timeout=5.0)
    topic = f"kx.restart.{unique}"
    collector = Collector()
    await consumer.subscribe(topic, collector.handler(), group=f"g-{unique}")
    expected: set[str] = set()
    for round_ in range(3):
        batch = [_msg(topic, round_ * 100 + i, key=f"k{i % 7}") for i in range(100)]
        pending = batch
        async with asyncio.timeout(60):
            while pending:  # right after a restart a publish may fail: retry those
                results = await publisher.publish_many(pending)
                pending = [m for m, r in zip(pending, results, strict=True) if r is not None]
                if pending:
                    await asyncio.sleep(0.2)
        expected |= {m.id for m in batch}
        await collector.wait_acked(expected, 60, f"round {round_}")
        if round_ < 2:
            await asyncio.to_thread(_crash_and_restart, private_tansu)
    assert (await publisher.health()).healthy and (await consumer.health()).healthy
