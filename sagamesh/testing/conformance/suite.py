"""The broker conformance suite: one class of pytest cases every adapter must pass.

Subclass :class:`BrokerConformance` in a test module and override the ``broker_factory``
fixture (and ``restartable`` for the restart case)::

    class TestMyBroker(BrokerConformance):
        @pytest.fixture
        def broker_factory(self, my_url):
            async def factory():
                return MyBroker(my_url)
            return factory

Contract the cases rely on, beyond the ``Broker`` protocol's docstrings:

- ``subscribe()`` returns once the subscription is in place: a message published after it
  returns reaches it.
- a persistent broker keeps a consumer group's position while no member is subscribed.
- publishing or subscribing on a closed broker raises ``BrokerUnavailableError``.

Cases a broker's ``Capabilities`` exclude are skipped with a message naming the capability.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest
import pytest_asyncio

from ...brokers.base import Broker, Capabilities, Delivery, Health, Subscription
from ...dlq_message import dead_letter
from ...errors import BrokerUnavailableError
from ...message import Headers, Message
from .collector import Collector
from .support import (
    BrokerFactory,
    BrokerPool,
    Names,
    Restartable,
    ids,
    messages,
    new_id,
    publish_all,
    require,
)


class BrokerConformance:
    """Broker-agnostic cases; knobs below may be lowered by a subclass for slow brokers."""

    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.asyncio]

    timeout: ClassVar[float] = 60.0  # seconds to wait for an expected delivery
    hold_window: ClassVar[float] = 0.5  # how long a negative check watches
    nack_delay: ClassVar[float] = 0.5
    batch_size: ClassVar[int] = 10_000
    restart_messages: ClassVar[int] = 10_000
    restarts: ClassVar[int] = 2
    restart_timeout: ClassVar[float] = 180.0

    # -- fixtures a subclass overrides ----------------------------------------------------------

    @pytest.fixture
    def broker_factory(self) -> BrokerFactory:
        raise NotImplementedError("override the broker_factory fixture in your test class")

    @pytest.fixture
    def restartable(self) -> Restartable | None:
        """A private, restartable instance of the broker; ``None`` skips the restart case."""
        return None

    # -- fixtures the cases use -----------------------------------------------------------------

    @pytest_asyncio.fixture
    async def brokers(self, broker_factory: BrokerFactory) -> AsyncIterator[BrokerPool]:
        pool = BrokerPool(broker_factory)
        try:
            yield pool
        finally:
            await pool.close()

    @pytest.fixture
    def names(self) -> Names:
        return Names()

    # -- basics -------------------------------------------------------------------------------

    async def test_capabilities_and_health(self, brokers: BrokerPool) -> None:
        broker = await brokers.connect()
        assert isinstance(broker, Broker)
        assert isinstance(broker.capabilities, Capabilities)
        health = await broker.health()
        assert isinstance(health, Health)
        assert health.healthy, f"connected broker reports unhealthy: {health.detail}"
        assert health.broker
        await broker.close()
        after = await broker.health()
        assert not after.healthy, "a closed broker must not report healthy"

    async def test_close_is_idempotent_and_final(self, brokers: BrokerPool, names: Names) -> None:
        broker = await brokers.connect()
        await asyncio.gather(broker.close(), broker.close())
        await broker.close()
        message = Message(id=new_id(), topic=names.topic("closed"), body=b"x")
        with pytest.raises(BrokerUnavailableError):
            await broker.publish(message)
        with pytest.raises(BrokerUnavailableError):
            await broker.subscribe(message.topic, Collector().handler())

    async def test_publish_subscribe_keeps_id_key_headers_body(
        self, brokers: BrokerPool, names: Names
    ) -> None:
        broker = await brokers.connect()
        topic = names.topic("roundtrip")
        collector = Collector()
        await broker.subscribe(topic, collector.handler(), group=names.group())
        sent = [
            Message(id=new_id(), topic=topic, key="saga-1",
                    headers={Headers.CONTENT_TYPE: "application/json",
                             Headers.EVENT_ID: "evt-1", Headers.EVENT_TYPE: "saga.started",
                             Headers.SAGA_ID: "saga-1", "x-unicode": "zß✓ 東京",
                             "X-Mixed-Case": "Value With Spaces"},
                    body=b'{"a": 1}'),
            Message(id=new_id(), topic=topic, key=None, headers={}, body=bytes(range(256))),
            Message(id=new_id(), topic=topic, key="k-empty-body", headers={"h": "v"}, body=b""),
            Message(id=new_id(), topic=topic, key="big", body=bytes(64 * 1024)),
        ]
        for message in sent[:2]:
            await broker.publish(message)
        await publish_all(broker, sent[2:])
        await collector.wait_acked(ids(sent), self.timeout)
        got = {r.message.id: r.message for r in collector.received}
        for message in sent:
            received = got[message.id]
            assert received.topic == message.topic
            assert received.key == message.key, f"key {received.key!r} != {message.key!r}"
            assert received.body == message.body, f"body of {message.id} changed"
            for name, value in message.headers.items():
                assert received.headers.get(name) == value, \
                    f"header {name!r}: {received.headers.get(name)!r} != {value!r}"
        assert all(r.attempt == 1 for r in collector.received)

    async def test_dead_letter_copy_keeps_reason_headers(
        self, brokers: BrokerPool, names: Names
    ) -> None:
        broker = await brokers.connect()
        original = Message(id=new_id(), topic=names.topic("orig"), key="saga-9",
                           headers={Headers.EVENT_ID: "e9"}, body=b"poison")
        copy = dead_letter(original, dlq_topic=names.topic("dlq"), reason="handler failed",
                           attempts=5, error=ValueError("bad"))
        collector = Collector()
        await broker.subscribe(copy.topic, collector.handler(), group=names.group())
        await broker.publish(copy)
        await collector.wait_acked({copy.id}, self.timeout)
        got = collector.acked[0].message
        assert got.id == original.id and got.body == original.body and got.key == original.key
        for header in (*Headers.DLQ_HEADERS, Headers.DLQ_ERROR, Headers.EVENT_ID):
            assert got.headers.get(header) == copy.headers[header], header
        assert got.headers[Headers.ORIGINAL_TOPIC] == original.topic
        assert got.headers[Headers.ATTEMPTS] == "5"

    # -- throughput-shaped cases -----------------------------------------------------------------

    async def test_concurrent_publishers_and_subscribers_lose_nothing(
        self, brokers: BrokerPool, names: Names
    ) -> None:
        consumer = await brokers.connect()
        caps = consumer.capabilities
        topic = names.topic("concurrent")
        collector = Collector()
        members = 3 if caps.consumer_groups else 1
        group = names.group() if caps.consumer_groups else None
        for member in range(members):
            await consumer.subscribe(topic, collector.handler(f"m{member}"), group=group,
                                     max_in_flight=32)
        publishers = [await brokers.connect() for _ in range(4)]
        batches = [messages(topic, 250, keys=10, prefix=f"p{i}") for i in range(len(publishers))]

        async def single(broker: Broker, batch: list[Message]) -> None:
            await asyncio.gather(*(broker.publish(m) for m in batch))

        await asyncio.gather(*(
            single(b, batch) if i % 2 else publish_all(b, batch)
            for i, (b, batch) in enumerate(zip(publishers, batches, strict=True))
        ))
        expected = set().union(*(ids(b) for b in batches))
        await collector.wait_acked(expected, self.timeout,
                                   sent=[m for batch in batches for m in batch])
        assert collector.acked_ids() == expected

    async def test_batch_of_10000_loses_nothing(self, brokers: BrokerPool, names: Names) -> None:
        publisher = await brokers.connect()
        consumer = await brokers.connect()
        topic = names.topic("batch")
        collector = Collector()
        await consumer.subscribe(topic, collector.handler(), group=names.group(),
                                 max_in_flight=256)
        batch = messages(topic, self.batch_size, keys=100)
        await publish_all(publisher, batch)
        await collector.wait_acked(ids(batch), self.timeout * 2)
        assert len(collector.acked_ids()) == self.batch_size

    async def test_many_topics_are_isolated(self, brokers: BrokerPool, names: Names) -> None:
        broker = await brokers.connect()
        base = names.topic("iso")
        # Names that prefix each other catch wildcard or prefix matching in an adapter.
        topics = [base, f"{base}.sub", f"{base}.sub.deeper", f"{base}-x", f"{base}_y",
                  *(f"{base}.n{i}" for i in range(5))]
        collectors = {t: Collector() for t in topics}
        for topic, collector in collectors.items():
            await broker.subscribe(topic, collector.handler(), group=names.group())
        sent = {t: messages(t, 20, keys=3) for t in topics}
        await asyncio.gather(*(publish_all(broker, batch) for batch in sent.values()))
        for topic, collector in collectors.items():
            await collector.wait_acked(ids(sent[topic]), self.timeout, f"messages of {topic}")
        # A stray message would arrive no later than the sentinels published after all.
        sentinels = {t: Message(id=new_id(), topic=t, key="sentinel") for t in topics}
        await publish_all(broker, list(sentinels.values()))
        for topic, collector in collectors.items():
            await collector.wait_acked({sentinels[topic].id}, self.timeout)
            assert collector.received_ids() == ids(sent[topic]) | {sentinels[topic].id}, \
                f"{topic} received messages of another topic"
            assert all(r.message.topic == topic for r in collector.received)

    async def test_max_in_flight_bounds_running_handlers(
        self, brokers: BrokerPool, names: Names
    ) -> None:
        broker = await brokers.connect()
        topic = names.topic("inflight")
        running = peak = 0
        release = asyncio.Event()

        async def hold(delivery: Delivery) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            try:
                await release.wait()
            finally:
                running -= 1

        collector = Collector()
        await broker.subscribe(topic, collector.handler(on_message=hold), group=names.group(),
                               max_in_flight=4)
        batch = messages(topic, 40, keys=40)
        await publish_all(broker, batch)
        await collector.wait_until(lambda: len(collector.received) >= 4, "4 handlers",
                                   self.timeout)
        more = await collector.observe(lambda: len(collector.received) > 4, self.hold_window)
        assert not more and peak == 4, f"{peak} handlers ran at once with max_in_flight=4"
        release.set()
        await collector.wait_acked(ids(batch), self.timeout)
        assert peak == 4

    # -- settlement --------------------------------------------------------------------------------

    async def test_nack_redelivers_with_increasing_attempt(
        self, brokers: BrokerPool, names: Names
    ) -> None:
        broker = await brokers.connect()
        topic = names.topic("nack")

        async def nack_twice(delivery: Delivery) -> None:
            if delivery.attempt < 3:
                await delivery.nack()

        collector = Collector()
        await broker.subscribe(topic, collector.handler(on_message=nack_twice),
                               group=names.group())
        message = Message(id=new_id(), topic=topic, key="k", headers={"h": "1"}, body=b"again")
        await broker.publish(message)
        await collector.wait_acked({message.id}, self.timeout)
        assert collector.attempts_of(message.id) == [1, 2, 3]
        assert all(r.message.body == b"again" and r.message.headers.get("h") == "1"
                   for r in collector.received)

    async def test_nack_with_delay_waits_before_redelivery(
        self, brokers: BrokerPool, names: Names
    ) -> None:
        broker = await brokers.connect()
        require(broker.capabilities, "delayed_redelivery", broker)
        topic = names.topic("delay")
        loop = asyncio.get_running_loop()
        nacked_at: list[float] = []

        async def nack_later(delivery: Delivery) -> None:
            if delivery.attempt == 1:
                nacked_at.append(loop.time())
                await delivery.nack(delay=self.nack_delay)

        collector = Collector()
        await broker.subscribe(topic, collector.handler(on_message=nack_later),
                               group=names.group())
        message = Message(id=new_id(), topic=topic, key="k", body=b"later")
        await broker.publish(message)
        await collector.wait_acked({message.id}, self.timeout)
        assert collector.attempts_of(message.id) == [1, 2]
        waited = collector.acked[0].at - nacked_at[0]
        assert waited >= self.nack_delay * 0.9, \
            f"redelivered after {waited:.3f} s, nack delay was {self.nack_delay} s"

    async def test_reject_does_not_redeliver(self, brokers: BrokerPool, names: Names) -> None:
        broker = await brokers.connect()
        topic = names.topic("reject")
        poison = Message(id=new_id(), topic=topic, key="k", body=b"poison")

        async def reject_poison(delivery: Delivery) -> None:
            if delivery.message.id == poison.id:
                await delivery.reject()

        collector = Collector()
        await broker.subscribe(topic, collector.handler(on_message=reject_poison),
                               group=names.group())
        await broker.publish(poison)
        await collector.wait_until(lambda: poison.id in collector.received_ids(),
                                   "the poison message", self.timeout)
        after = [Message(id=new_id(), topic=topic, key="k", body=b"after") for _ in range(3)]
        await publish_all(broker, after)
        await collector.wait_acked(ids(after), self.timeout)
        redelivered = await collector.observe(
            lambda: len(collector.attempts_of(poison.id)) > 1, self.hold_window)
        assert not redelivered, f"rejected message came back: {collector.attempts_of(poison.id)}"
        assert poison.id not in collector.acked_ids()

    async def test_continue_after_handler_errors(self, brokers: BrokerPool, names: Names) -> None:
        broker = await brokers.connect()
        topic = names.topic("errors")
        batch = messages(topic, 60, keys=6)
        failing = {m.id for i, m in enumerate(batch) if i % 3 == 0}

        async def fail_once(delivery: Delivery) -> None:
            if delivery.message.id in failing and delivery.attempt == 1:
                raise RuntimeError("handler failed (conformance: expected)")

        collector = Collector()
        await broker.subscribe(topic, collector.handler(on_message=fail_once),
                               group=names.group())
        await publish_all(broker, batch)
        await collector.wait_acked(ids(batch), self.timeout)
        for message_id in failing:
            assert collector.attempts_of(message_id)[:2] == [1, 2]
        later = messages(topic, 10, prefix="later")
        await publish_all(broker, later)
        await collector.wait_acked(ids(later), self.timeout, "messages after the errors")

    # -- ordering ----------------------------------------------------------------------------------

    async def test_ordered_holds_next_of_key_until_settled(
        self, brokers: BrokerPool, names: Names
    ) -> None:
        broker = await brokers.connect()
        topic = names.topic("hold")
        first = Message(id=new_id(), topic=topic, key="k", body=b"1")
        second = Message(id=new_id(), topic=topic, key="k", body=b"2")
        release = asyncio.Event()

        async def hold_first(delivery: Delivery) -> None:
            if delivery.message.id == first.id:
                await release.wait()

        collector = Collector()
        await broker.subscribe(topic, collector.handler(on_message=hold_first),
                               group=names.group(), max_in_flight=16, ordered=True)
        await publish_all(broker, [first, second])
        await collector.wait_until(lambda: first.id in collector.received_ids(),
                                   "the first message", self.timeout)
        early = await collector.observe(lambda: second.id in collector.received_ids(),
                                        self.hold_window)
        assert not early, "the next message of the key was handed over before the first settled"
        release.set()
        await collector.wait_acked({first.id, second.id}, self.timeout)
        assert [r.message.id for r in collector.acked] == [first.id, second.id]

    async def test_per_key_order(self, brokers: BrokerPool, names: Names) -> None:
        publisher = await brokers.connect()
        require(publisher.capabilities, "ordered_by_key", publisher)
        consumer = await brokers.connect()
        topic = names.topic("order")
        collector = Collector()
        tick = itertools.count()

        async def jitter(delivery: Delivery) -> None:
            for _ in range(next(tick) % 3):
                await asyncio.sleep(0)

        members = 2 if publisher.capabilities.consumer_groups else 1
        group = names.group()
        for member in range(members):
            await consumer.subscribe(topic, collector.handler(f"m{member}", jitter), group=group,
                                     max_in_flight=32, ordered=True)
        batch = messages(topic, 800, keys=8)
        for chunk in range(0, len(batch), 100):
            await publish_all(publisher, batch[chunk:chunk + 100])
        await collector.wait_acked(ids(batch), self.timeout)
        self._assert_key_order(batch, collector)

    async def test_per_key_order_survives_nack(self, brokers: BrokerPool, names: Names) -> None:
        await self._order_after_nack(brokers, names, delay=None)

    async def test_per_key_order_survives_delayed_nack(
        self, brokers: BrokerPool, names: Names
    ) -> None:
        await self._order_after_nack(brokers, names, delay=self.nack_delay / 2)

    async def _order_after_nack(self, brokers: BrokerPool, names: Names,
                                delay: float | None) -> None:
        broker = await brokers.connect()
        require(broker.capabilities, "ordered_by_key", broker)
        if delay is not None:
            require(broker.capabilities, "delayed_redelivery", broker)
        topic = names.topic("order-nack")
        batch = messages(topic, 60, keys=2)
        nack_ids = {batch[10].id, batch[11].id, batch[31].id}

        async def nack_some(delivery: Delivery) -> None:
            if delivery.message.id in nack_ids and delivery.attempt == 1:
                await delivery.nack(delay=delay)

        collector = Collector()
        await broker.subscribe(topic, collector.handler(on_message=nack_some),
                               group=names.group(), max_in_flight=16, ordered=True)
        await publish_all(broker, batch)
        await collector.wait_acked(ids(batch), self.timeout)
        self._assert_key_order(batch, collector)
        for message_id in nack_ids:
            assert collector.attempts_of(message_id) == [1, 2]

    @staticmethod
    def _assert_key_order(batch: list[Message], collector: Collector) -> None:
        position = {m.id: i for i, m in enumerate(batch)}
        seen: dict[str | None, int] = {}
        for record in collector.acked:
            key = record.message.key
            pos = position[record.message.id]
            last = seen.get(key, -1)
            assert pos > last, (f"key {key}: message #{pos} acked after #{last} "
                                "(out of order or twice)")
            seen[key] = pos

    # -- lifecycle ---------------------------------------------------------------------------------

    async def test_group_resumes_after_subscriber_close(
        self, brokers: BrokerPool, names: Names
    ) -> None:
        broker = await brokers.connect()
        require(broker.capabilities, "persistent", broker)
        topic, group = names.topic("resume"), names.group()
        first, second = messages(topic, 100, keys=5), messages(topic, 100, keys=5, prefix="n")
        before = Collector()
        sub = await broker.subscribe(topic, before.handler(), group=group)
        await publish_all(broker, first)
        await before.wait_acked(ids(first), self.timeout)
        await sub.close()
        await publish_all(broker, second)  # nobody subscribed: the group keeps its place
        after = Collector()
        await broker.subscribe(topic, after.handler(), group=group)
        await after.wait_acked(ids(second), self.timeout)
        replayed = after.received_ids() & ids(first)
        assert not replayed, f"{len(replayed)} acked messages were delivered again"

    async def test_concurrent_close(self, brokers: BrokerPool, names: Names) -> None:
        broker = await brokers.connect()
        publisher = await brokers.connect()
        caps = broker.capabilities
        topic, group = names.topic("close"), names.group()
        collector = Collector()

        async def slow(delivery: Delivery) -> None:
            await asyncio.sleep(0.001)

        subs: list[Subscription] = [
            await broker.subscribe(topic, collector.handler(f"m{i}", slow),
                                   group=group if caps.consumer_groups else None,
                                   max_in_flight=8)
            for i in range(4 if caps.consumer_groups else 1)
        ]
        batch = messages(topic, 400, keys=20)
        await publish_all(publisher, batch)
        await collector.wait_until(lambda: len(collector.acked) >= 50, "50 acks", self.timeout)
        closing = [s.close() for s in subs] + [s.close() for s in subs]
        await asyncio.wait_for(asyncio.gather(*closing), self.timeout)
        settled = len(collector.received)
        await asyncio.wait_for(asyncio.gather(broker.close(), broker.close()), self.timeout)
        late = await collector.observe(lambda: len(collector.received) > settled,
                                       self.hold_window)
        assert not late, "a closed subscription still handed over messages"
        if caps.persistent and caps.consumer_groups:
            rest = Collector()
            other = await brokers.connect()
            await other.subscribe(topic, rest.handler(), group=group)
            missing = ids(batch) - collector.acked_ids()
            await rest.wait_acked(missing, self.timeout,
                                  f"{len(missing)} unacked messages after close")

    async def test_publisher_close_flushes(self, brokers: BrokerPool, names: Names) -> None:
        consumer = await brokers.connect()
        publisher = await brokers.connect()
        topic = names.topic("flush")
        collector = Collector()
        await consumer.subscribe(topic, collector.handler(), group=names.group())
        batch = messages(topic, 200, keys=10)
        tasks = [asyncio.create_task(publisher.publish(m)) for m in batch[:100]]
        tasks.append(asyncio.create_task(publish_all(publisher, batch[100:])))
        await asyncio.sleep(0)  # every publish has started and is waiting for its confirm
        await publisher.close()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, f"close() broke {len(errors)} in-flight publishes: {errors[0]!r}"
        await collector.wait_acked(ids(batch), self.timeout)

    async def test_confirm_means_the_broker_has_it(
        self, brokers: BrokerPool, names: Names
    ) -> None:
        consumer = await brokers.connect()
        caps = consumer.capabilities
        topic, group = names.topic("confirm"), names.group()
        collector = Collector()
        sub = await consumer.subscribe(topic, collector.handler(), group=group)
        if caps.persistent:
            await sub.close()  # the group exists, nobody is listening
        publisher = await brokers.connect()
        single = messages(topic, 50, keys=5)
        for message in single:
            await publisher.publish(message)
        batch = messages(topic, 500, keys=5, prefix="b")
        await publish_all(publisher, batch)
        await publisher.close()  # nothing of the publisher is left to deliver them
        if caps.persistent:
            other = await brokers.connect()
            await other.subscribe(topic, collector.handler(), group=group)
        await collector.wait_acked(ids(single) | ids(batch), self.timeout)

    async def test_consumer_groups_each_get_everything_members_share(
        self, brokers: BrokerPool, names: Names
    ) -> None:
        broker = await brokers.connect()
        require(broker.capabilities, "consumer_groups", broker)
        topic = names.topic("groups")
        groups = {label: Collector() for label in ("a", "b")}
        for label, collector in groups.items():
            for member in ("m1", "m2"):
                await broker.subscribe(topic, collector.handler(member),
                                       group=names.group(label), max_in_flight=16)
        batch = messages(topic, 300, keys=30)
        await publish_all(broker, batch)
        for label, collector in groups.items():
            await collector.wait_acked(ids(batch), self.timeout, f"group {label}")
            m1, m2 = collector.acked_by("m1"), collector.acked_by("m2")
            both = set(m1) & set(m2)
            assert not both, f"group {label}: {len(both)} messages went to both members"
            assert len(m1) + len(m2) == len(batch), \
                f"group {label}: {len(m1) + len(m2)} acks for {len(batch)} messages"

    async def test_transaction_rollback_publishes_nothing(
        self, brokers: BrokerPool, names: Names
    ) -> None:
        broker = await brokers.connect()
        require(broker.capabilities, "native_transactions", broker)
        transaction: Any = getattr(broker, "transaction", None)
        assert transaction is not None, "native_transactions=True but no transaction() method"
        topic = names.topic("tx")
        collector = Collector()
        await broker.subscribe(topic, collector.handler(), group=names.group())
        rolled_back = messages(topic, 5, prefix="rb")
        with pytest.raises(RuntimeError, match="roll back"):
            async with transaction() as tx:
                for message in rolled_back:
                    await tx.publish(message)
                raise RuntimeError("roll back (conformance: expected)")
        committed = messages(topic, 5, prefix="c")
        async with transaction() as tx:
            for message in committed:
                await tx.publish(message)
        await collector.wait_acked(ids(committed), self.timeout)
        assert [r.message.id for r in collector.acked] == [m.id for m in committed]
        assert not collector.received_ids() & ids(rolled_back), "a rolled-back message arrived"

    # -- restart -----------------------------------------------------------------------------------

    async def test_reconnect_after_broker_restarts_loses_nothing(
        self, restartable: Restartable | None, names: Names
    ) -> None:
        if restartable is None:
            pytest.skip("no restartable fixture: this broker has no private instance to restart")
        pool = BrokerPool(restartable.factory)
        try:
            await self._restart_case(restartable, pool, names)
        finally:
            await pool.close()

    async def _restart_case(self, restartable: Restartable, pool: BrokerPool,
                            names: Names) -> None:
        publisher = await pool.connect()
        consumer = await pool.connect()
        require(consumer.capabilities, "persistent", consumer)
        topic = names.topic("restart")
        collector = Collector()
        await consumer.subscribe(topic, collector.handler(), group=names.group(),
                                 max_in_flight=128)
        batch = messages(topic, self.restart_messages, keys=50)
        published = 0
        progress = asyncio.Event()

        async def publish() -> None:
            nonlocal published
            for start in range(0, len(batch), 250):
                pending = batch[start:start + 250]
                while pending:
                    try:
                        results: list[Exception | None] = list(
                            await asyncio.wait_for(publisher.publish_many(pending), 30))
                    except Exception as exc:  # the broker is down: retry the whole chunk
                        results = [exc] * len(pending)
                    pending = [m for m, r in zip(pending, results, strict=True) if r is not None]
                    if pending:
                        await asyncio.sleep(0.2)  # back off while the server restarts
                published = start + 250
                progress.set()

        async def restart_midstream() -> None:
            for n in range(1, self.restarts + 1):
                mark = len(batch) * n // (self.restarts + 1)
                while published < mark:
                    progress.clear()
                    await progress.wait()
                await restartable.restart()

        await asyncio.wait_for(asyncio.gather(publish(), restart_midstream()),
                               self.restart_timeout)
        await collector.wait_acked(ids(batch), self.restart_timeout,
                                   "every message after the restarts")
