"""Kafka adapter pieces that need no broker: URL and options, commit points, the dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
import random
from datetime import timedelta
from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition
from hypothesis import given
from hypothesis import strategies as st
from sagamesh_kafka import ID_HEADER, KafkaBroker
from sagamesh_kafka._dispatch import Dispatcher, Item
from sagamesh_kafka._offsets import PartitionOffsets
from sagamesh_kafka._options import check_topic

from sagamesh.brokers import create_broker
from sagamesh.brokers.kafka_wire import from_record, record_headers, record_key
from sagamesh.errors import BrokerUnavailableError, ConfigError
from sagamesh.message import Message

# -- URL and options --------------------------------------------------------------------------


def test_url_lists_bootstrap_servers_with_default_port_and_query_options() -> None:
    broker = KafkaBroker("kafka://k1:19092,k2,[::1]:9093?partitions=6&linger_ms=2&tls=false",
                         client_id="orders", commit_interval=timedelta(milliseconds=50))
    assert broker.bootstrap == ["k1:19092", "k2:9092", "[::1]:9093"]
    assert broker.options.partitions == 6
    assert broker.options.linger_ms == 2
    assert broker.options.client_id == "orders"
    assert broker.options.commit_interval == pytest.approx(0.05)
    assert broker.options.security() == {"security_protocol": "PLAINTEXT"}


def test_keyword_options_override_the_query_and_credentials_select_sasl() -> None:
    broker = KafkaBroker("kafka://alice:s3cret@k1?partitions=6", partitions=2)
    assert broker.options.partitions == 2
    security = broker.options.security()
    assert security["security_protocol"] == "SASL_PLAINTEXT"
    assert security["sasl_plain_username"] == "alice"
    assert security["sasl_plain_password"] == "s3cret"
    tls = KafkaBroker("kafka://k1", tls=True, username="u", password="p").options.security()
    assert tls["security_protocol"] == "SASL_SSL" and "ssl_context" in tls


def test_registry_resolves_the_kafka_scheme() -> None:
    broker = create_broker("kafka://127.0.0.1:9092")
    assert isinstance(broker, KafkaBroker)
    assert broker.capabilities.ordered_by_key and broker.capabilities.delayed_redelivery
    assert not broker.capabilities.native_transactions  # unknown until connect() probes


@pytest.mark.parametrize(("url", "options", "field"), [
    ("kafka://k1", {"partitions": 0}, "partitions"),
    ("kafka://k1?acks=2", {}, "acks"),
    ("kafka://k1?transactions=maybe", {}, "transactions"),
    ("kafka://k1?auto_offset_reset=middle", {}, "auto_offset_reset"),
    ("kafka://k1?linger_ms=soon", {}, "linger_ms"),
    ("kafka://k1?fetch_max_wait=0", {}, "fetch_max_wait"),
    ("kafka://k1", {"no_such_option": 1}, "no_such_option"),
    ("kafka://k1?tls=perhaps", {}, "tls"),
    ("kafka://k1:port", {}, "broker.url"),
    ("kafka://", {}, "broker.url"),
    ("nats://k1", {}, "broker.url"),
])
def test_bad_options_raise_config_error_naming_the_field(
    url: str, options: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        KafkaBroker(url, **options)
    assert info.value.field == field


def test_boolean_transactions_option_maps_to_mode() -> None:
    assert KafkaBroker("kafka://k", transactions=False).options.transactions == "off"
    assert KafkaBroker("kafka://k", transactions=True).options.transactions == "on"


@pytest.mark.parametrize("topic", ["", "has space", "ä", "a/b", ".", "..", "x" * 250])
def test_illegal_topic_names_are_refused(topic: str) -> None:
    with pytest.raises(ConfigError):
        check_topic(topic)


async def test_unconnected_or_unreachable_broker_raises_broker_unavailable() -> None:
    broker = KafkaBroker("kafka://127.0.0.1:1", request_timeout=2.0)
    with pytest.raises(BrokerUnavailableError):
        await broker.publish(Message(id="1", topic="t"))
    with pytest.raises(BrokerUnavailableError):
        await broker.connect()
    assert not (await broker.health()).healthy


# -- codec ----------------------------------------------------------------------------------


def test_codec_round_trip_moves_the_id_into_a_header_and_back() -> None:
    message = Message(id="id-1", topic="t", key="saga-1", body=b"\x00\xff",
                      headers={"content-type": "application/json", "x": "zß✓"})
    headers = record_headers(message)
    assert headers[0] == (ID_HEADER, b"id-1")
    record = SimpleNamespace(topic="t", partition=2, offset=7, key=record_key(message),
                             value=message.body, headers=tuple(headers))
    assert from_record(record) == message


def test_foreign_headers_and_keys_that_are_not_utf8_arrive_with_replacement_characters() -> None:
    record = SimpleNamespace(topic="t", partition=0, offset=3, key=b"k\xff",
                             value=b"v", headers=((ID_HEADER, b"id-\xfe"), ("x", b"\xc3("),
                                                  ("ok", "zß".encode()), ("none", None)))
    message = from_record(record)
    assert message.id == "id-\ufffd" and message.key == "k\ufffd"
    assert message.headers == {"x": "\ufffd(", "ok": "zß", "none": ""}


def test_foreign_record_without_id_gets_a_stable_position_id() -> None:
    record = SimpleNamespace(topic="t", partition=1, offset=42, key=None, value=None,
                             headers=())
    message = from_record(record)
    assert message.id == "t-1-42" and message.key is None and message.body == b""


# -- commit points ----------------------------------------------------------------------------


@given(st.lists(st.integers(0, 2), min_size=1, max_size=60), st.randoms())
def test_committable_is_one_past_the_longest_settled_prefix(
    gaps: list[int], rng: random.Random
) -> None:
    offsets, tracker, position = [], PartitionOffsets(epoch=1), 10
    for gap in gaps:  # offsets rise with gaps (compaction, transaction markers)
        position += gap + 1
        offsets.append(position)
        assert tracker.add(position)
    order = offsets[:]
    rng.shuffle(order)
    settled: set[int] = set()
    for offset in order[: rng.randrange(len(order) + 1)]:
        tracker.settle(offset)
        settled.add(offset)
        prefix = 0
        while prefix < len(offsets) and offsets[prefix] in settled:
            prefix += 1
        expected = offsets[prefix - 1] + 1 if prefix else None
        assert tracker.committable == expected
        assert len(tracker) == len(offsets) - prefix


def test_offsets_going_back_are_refused_and_dirty_tracks_commits() -> None:
    tracker = PartitionOffsets(epoch=3)
    assert tracker.add(5) and tracker.add(6)
    assert not tracker.add(6) and not tracker.add(2)
    assert not tracker.dirty
    tracker.settle(6)
    assert tracker.committable is None  # 5 is still open
    tracker.settle(5)
    assert tracker.committable == 7 and tracker.dirty
    tracker.committed = 7
    assert not tracker.dirty
    assert not tracker.add(6)


# -- dispatcher -------------------------------------------------------------------------------


class Recorder:
    """Runs each item until released; records start order and peak concurrency."""

    def __init__(self) -> None:
        self.started: list[tuple[int, int]] = []  # (offset, attempt)
        self.running = 0
        self.peak = 0
        self.gates: dict[tuple[int, int], asyncio.Event] = {}
        self.changed = asyncio.Event()

    async def wait_started(self, offset: int, attempt: int) -> None:
        async with asyncio.timeout(5):
            while (offset, attempt) not in self.started:
                self.changed.clear()
                await self.changed.wait()

    async def run(self, item: Item) -> None:
        self.started.append((item.offset, item.attempt))
        self.changed.set()
        self.running += 1
        self.peak = max(self.peak, self.running)
        gate = self.gates.setdefault((item.offset, item.attempt), asyncio.Event())
        try:
            await gate.wait()
        finally:
            self.running -= 1

    def release(self, offset: int, attempt: int = 1) -> None:
        self.gates.setdefault((offset, attempt), asyncio.Event()).set()


TP = TopicPartition("t", 0)


def _items(keys: list[str | None]) -> list[Item]:
    return [Item(TP, i, 1, Message(id=str(i), topic="t", key=k)) for i, k in enumerate(keys)]


async def _settle_soon() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_ordered_dispatch_holds_a_key_but_runs_other_keys() -> None:
    rec = Recorder()
    d = Dispatcher(rec.run, max_in_flight=8, ordered=True, name="t")
    items = _items(["a", "a", "b", None, None])
    for item in items:
        d.add(item)
    d.pump()
    await _settle_soon()
    assert [o for o, _ in rec.started] == [0, 2, 3, 4]  # 1 waits for 0 (same key "a")
    d.done(items[0])
    rec.release(0)
    await _settle_soon()
    assert [o for o, _ in rec.started] == [0, 2, 3, 4, 1]
    for item in items[1:]:
        d.done(item)
        rec.release(item.offset)
    await _settle_soon()
    assert not d.live and d.running == 0


async def test_dispatch_never_exceeds_max_in_flight() -> None:
    rec = Recorder()
    d = Dispatcher(rec.run, max_in_flight=3, ordered=False, name="t")
    items = _items([None] * 20)
    for item in items:
        d.add(item)
    d.pump()
    for item in items:
        await _settle_soon()
        assert rec.running <= 3
        d.done(item)
        rec.release(item.offset)
    await _settle_soon()
    assert rec.peak == 3 and len(rec.started) == 20


async def test_nack_with_delay_keeps_an_ordered_key_blocked_until_redelivered() -> None:
    rec = Recorder()
    d = Dispatcher(rec.run, max_in_flight=8, ordered=True, name="t")
    items = _items(["a", "a"])
    for item in items:
        d.add(item)
    d.pump()
    await _settle_soon()
    d.redeliver(items[0], 0.2)
    rec.release(0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.sleep(0.1)
    assert rec.started == [(0, 1)]  # the key waits for the delayed redelivery
    await rec.wait_started(0, 2)
    assert loop.time() - start >= 0.19
    d.done(items[0])
    rec.release(0, 2)
    await _settle_soon()
    assert rec.started == [(0, 1), (0, 2), (1, 1)]
    d.done(items[1])
    rec.release(1)


async def test_nack_with_delay_frees_the_key_when_unordered() -> None:
    rec = Recorder()
    d = Dispatcher(rec.run, max_in_flight=1, ordered=False, name="t")
    items = _items(["a", "a"])
    for item in items:
        d.add(item)
    d.pump()
    await _settle_soon()
    d.redeliver(items[0], 0.2)
    rec.release(0)
    await _settle_soon()
    assert rec.started == [(0, 1), (1, 1)]  # the next one went ahead during the delay
    d.done(items[1])
    rec.release(1)
    await rec.wait_started(0, 2)
    d.done(items[0])
    rec.release(0, 2)
    await _settle_soon()
    assert not d.live


async def test_drop_forgets_a_revoked_partition_and_unblocks_its_keys() -> None:
    rec = Recorder()
    d = Dispatcher(rec.run, max_in_flight=8, ordered=True, name="t")
    other = TopicPartition("t", 1)
    revoked = _items(["a", "a"])
    kept = Item(other, 0, 1, Message(id="x", topic="t", key="a"))
    for item in [*revoked, kept]:
        d.add(item)
    d.pump()
    await _settle_soon()
    assert [o for o, _ in rec.started] == [0]
    d.redeliver(revoked[0], 5.0)  # a pending timer must be cancelled by drop
    assert d.drop([TP]) == 2
    await _settle_soon()
    assert d.live == {kept} and rec.started[-1] == (0, 1) and len(rec.started) == 2
    d.done(revoked[0])  # a late settlement of a dropped item changes nothing
    assert d.live == {kept}
    for task in d.close():
        await asyncio.gather(task, return_exceptions=True)


# -- transactions (the context manager's contract; tansu has no transactions) -----------------


class RecordingProducer:
    """Records the transaction calls run_transaction makes; fails where told to."""

    def __init__(self, fail: str = "") -> None:
        self.calls: list[str] = []
        self.fail = fail

    async def _step(self, name: str) -> None:
        self.calls.append(name)
        if name == self.fail:
            raise RuntimeError(f"{name} failed")

    async def begin_transaction(self) -> None:
        await self._step("begin")

    async def commit_transaction(self) -> None:
        await self._step("commit")

    async def abort_transaction(self) -> None:
        await self._step("abort")

    async def send(self, topic: str, value: bytes, *, key: bytes | None,
                   headers: list[tuple[str, bytes]]) -> asyncio.Future[None]:
        self.calls.append(f"send:{topic}")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail == "send":
            future.set_exception(RuntimeError("not confirmed"))
        else:
            future.set_result(None)
        return future


async def test_transaction_commits_after_its_sends_and_aborts_on_an_exception() -> None:
    from sagamesh_kafka._transaction import run_transaction

    lock = asyncio.Lock()
    ok = RecordingProducer()
    async with run_transaction(ok, lock) as tx:  # type: ignore[arg-type]
        await tx.publish(Message(id="1", topic="t", key="k"))
        await tx.publish(Message(id="2", topic="t"))
    assert ok.calls == ["begin", "send:t", "send:t", "commit"]

    rolled = RecordingProducer()
    with pytest.raises(ValueError, match="boom"):
        async with run_transaction(rolled, lock) as tx:  # type: ignore[arg-type]
            await tx.publish(Message(id="1", topic="t"))
            raise ValueError("boom")
    assert rolled.calls == ["begin", "send:t", "abort"]
    assert not lock.locked()


@pytest.mark.parametrize(("fail", "calls"), [
    ("begin", ["begin"]),
    ("commit", ["begin", "send:t", "commit", "abort"]),
    ("send", ["begin", "send:t", "abort"]),
])
async def test_transaction_failures_raise_transaction_error(fail: str, calls: list[str]) -> None:
    from sagamesh_kafka._transaction import run_transaction

    from sagamesh.errors import TransactionError

    producer = RecordingProducer(fail)
    with pytest.raises(TransactionError):
        async with run_transaction(producer, asyncio.Lock()) as tx:  # type: ignore[arg-type]
            await tx.publish(Message(id="1", topic="t"))
    assert producer.calls == calls


async def test_transaction_refuses_an_illegal_topic_before_sending() -> None:
    from sagamesh_kafka._transaction import run_transaction

    producer = RecordingProducer()
    with pytest.raises(ConfigError):
        async with run_transaction(producer, asyncio.Lock()) as tx:  # type: ignore[arg-type]
            await tx.publish(Message(id="1", topic="bad topic"))
    assert producer.calls == ["begin", "abort"]


async def test_a_keys_chain_runs_back_to_back_in_one_task() -> None:
    d: Dispatcher
    ran: list[tuple[int, asyncio.Task[object] | None]] = []

    async def settle_at_once(item: Item) -> None:
        ran.append((item.offset, asyncio.current_task()))
        d.done(item)

    d = Dispatcher(settle_at_once, max_in_flight=8, ordered=True, name="t")
    for item in _items(["a"] * 10):
        d.add(item)
    d.pump()
    await _settle_soon()
    assert [offset for offset, _ in ran] == list(range(10))
    assert len({task for _, task in ran}) == 1  # no task (and no loop turn) per record
    assert not d.live and d.running == 0 and not d.tasks


async def test_a_handler_busy_after_settling_gets_its_successor_started() -> None:
    d: Dispatcher
    second_started = asyncio.Event()
    first_done = asyncio.Event()
    freed: list[bool] = []

    async def run(item: Item) -> None:
        if item.offset == 1:
            second_started.set()
        d.done(item)
        if item.offset == 0:  # still busy after settling: its successor must not wait for it
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(second_started.wait(), 2)
            freed.append(second_started.is_set())
            first_done.set()

    d = Dispatcher(run, max_in_flight=8, ordered=True, name="t")
    for item in _items(["a", "a"]):
        d.add(item)
    d.pump()
    await asyncio.wait_for(first_done.wait(), 5)
    assert freed == [True]


async def test_room_waits_until_the_buffer_drained_to_the_mark() -> None:
    rec = Recorder()
    d = Dispatcher(rec.run, max_in_flight=8, ordered=False, name="t")
    items = _items([None] * 8)
    for item in items:
        d.add(item)
    waiter = asyncio.ensure_future(d.room(5, within=5))
    for item in items[:2]:
        d.done(item)
    await _settle_soon()
    assert not waiter.done()  # 6 live: not yet a chunk's worth of room
    d.done(items[2])
    await _settle_soon()
    assert waiter.done() and len(d.live) == 5
    d.close()


class CommitOnCue:
    """A consumer whose commit finishes when the test says so (no broker)."""

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.started = asyncio.Event()
        self.finish: asyncio.Future[None] | None = None

    def assignment(self) -> set[TopicPartition]:
        return {self.tp}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.finish = asyncio.get_running_loop().create_future()
        self.started.set()
        await self.finish


async def test_cancelling_the_commit_loop_as_a_commit_completes_still_stops_it() -> None:
    """asyncio.wait_for (3.11) returns the result when the awaited work completes in the same
    turn as the cancellation and drops the cancellation: close() then waited forever for the
    commit loop (seen: the documented Kafka example hung in sub.close())."""
    from sagamesh_kafka._options import KafkaOptions
    from sagamesh_kafka._subscription import KafkaSubscription

    async def handler(delivery: object) -> None:
        return None

    tp = TopicPartition("t", 0)
    sub = KafkaSubscription(bootstrap=["127.0.0.1:1"], options=KafkaOptions(commit_interval=0.01),
                            topic="t", handler=handler, group="g", max_in_flight=1,
                            ordered=False, on_close=lambda _: None)
    consumer = CommitOnCue(tp)
    sub._consumer = consumer  # type: ignore[assignment]
    offsets = sub._offsets[tp] = PartitionOffsets(1)
    offsets.add(5)
    offsets.settle(5)  # something to commit
    loop_task = asyncio.create_task(sub._commit_loop())
    await asyncio.wait_for(consumer.started.wait(), 5)
    assert consumer.finish is not None
    consumer.finish.set_result(None)  # the commit completes ...
    loop_task.cancel()  # ... in the very turn the loop is cancelled
    done, _ = await asyncio.wait({loop_task}, timeout=2)
    assert done, "the commit loop went on after its cancellation"
    assert loop_task.cancelled()
