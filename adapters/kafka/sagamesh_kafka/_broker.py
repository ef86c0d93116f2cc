"""``KafkaBroker``: the sagamesh ``Broker`` protocol on aiokafka."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from sagamesh.brokers.base import BrokerTransaction, Capabilities, Health, MessageHandler
from sagamesh.brokers.kafka_wire import record_headers, record_key
from sagamesh.errors import BrokerUnavailableError, ConfigError, TransactionError
from sagamesh.message import Message

from ._errors import map_publish_error
from ._options import KafkaOptions, build_options, check_topic, parse_url
from ._subscription import KafkaSubscription
from ._transaction import open_transactional_producer, run_transaction

log = logging.getLogger(__name__)

_TOPIC_EXISTS = 36
BASE_CAPABILITIES = Capabilities(
    persistent=True,
    ordered_by_key=True,
    consumer_groups=True,
    native_transactions=False,
    delayed_redelivery=True,
    native_dead_letter=False,
)


class KafkaBroker:
    """Kafka (or any Kafka-protocol broker, e.g. tansu) behind the sagamesh ``Broker`` protocol.

    ``kafka://host:9092[,host2:9092][?option=value...]``; options are listed in
    :class:`~sagamesh_kafka.KafkaOptions`. ``capabilities.native_transactions`` is known only
    after :meth:`connect`, which probes the broker for transactional producers.
    """

    name = "kafka"

    def __init__(self, url: str = "kafka://127.0.0.1:9092", **options: Any) -> None:
        self.url = url
        self.bootstrap, query = parse_url(url)
        self.options: KafkaOptions = build_options(query, options)
        self.capabilities = BASE_CAPABILITIES
        self._producer: AIOKafkaProducer | None = None
        self._tx_producer: AIOKafkaProducer | None = None
        self._tx_lock = asyncio.Lock()
        self._admin: AIOKafkaAdminClient | None = None
        self._topics: set[str] = set()
        self._creating: dict[str, asyncio.Task[None]] = {}
        self._subs: set[KafkaSubscription] = set()
        self._state = "new"  # new → connected → closing → closed
        self._active = 0  # publish calls in progress (close waits for them)
        self._idle: asyncio.Event | None = None
        self._close_task: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def connect(self) -> None:
        if self._state == "connected":
            return
        if self._state != "new":
            raise BrokerUnavailableError("this Kafka broker client was closed; make a new one")
        o = self.options
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=o.client_id,
            acks=o.acks_value(),
            linger_ms=o.linger_ms,
            max_batch_size=o.max_batch_size,
            compression_type=None if o.compression == "none" else o.compression,
            request_timeout_ms=int(o.request_timeout * 1000),
            enable_idempotence=o.enable_idempotence,
            **o.security(),
        )
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id=o.client_id,
                                    request_timeout_ms=int(o.request_timeout * 1000),
                                    **o.security())
        try:
            await asyncio.wait_for(producer.start(), o.request_timeout)
            await asyncio.wait_for(admin.start(), o.request_timeout)
        except Exception as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            with contextlib.suppress(Exception):
                await admin.close()
            raise BrokerUnavailableError(
                f"cannot connect to Kafka at {','.join(self.bootstrap)}: {exc!r}") from exc
        self._producer, self._admin = producer, admin
        if o.transactions != "off":
            tx_id = o.transactional_id or f"{o.client_id}-{uuid.uuid4().hex}"
            self._tx_producer = await open_transactional_producer(
                producer.client, self.bootstrap, o, tx_id)
            if self._tx_producer is None and o.transactions == "on":
                await self._shutdown()
                raise ConfigError("transactions='on' but the Kafka broker refused a "
                                  "transactional producer", field="transactions")
        self.capabilities = Capabilities(
            persistent=True, ordered_by_key=True, consumer_groups=True,
            native_transactions=self._tx_producer is not None,
            delayed_redelivery=True, native_dead_letter=False)
        self._state = "connected"

    async def close(self) -> None:
        """Wait for publishes in progress, stop subscriptions, flush and stop. Idempotent."""
        if self._state == "new":
            self._state = "closed"
            return
        if self._close_task is None:
            self._close_task = asyncio.create_task(self._close())
        await asyncio.shield(self._close_task)

    async def _close(self) -> None:
        self._state = "closing"
        if self._active:
            self._idle = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self.options.request_timeout)
        await asyncio.gather(*(sub.close() for sub in list(self._subs)),
                             return_exceptions=True)
        await self._shutdown()
        self._state = "closed"

    async def _shutdown(self) -> None:
        for task in self._creating.values():
            task.cancel()
        timeout = self.options.request_timeout
        for producer in (self._producer, self._tx_producer):
            if producer is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(producer.stop(), timeout)
        if self._admin is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._admin.close(), timeout)

    async def __aenter__(self) -> KafkaBroker:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _require(self) -> AIOKafkaProducer:
        if self._state != "connected" or self._producer is None:
            raise BrokerUnavailableError(f"Kafka broker client is {self._state} "
                                         "(use `async with broker` or connect())")
        return self._producer

    def _enter(self) -> AIOKafkaProducer:
        producer = self._require()
        self._active += 1
        return producer

    def _leave(self) -> None:
        self._active -= 1
        if not self._active and self._idle is not None:
            self._idle.set()

    # -- topics ---------------------------------------------------------------------------------

    async def ensure_topic(self, topic: str) -> None:
        """Create ``topic`` (``partitions``, ``replication_factor``) unless it exists."""
        if topic in self._topics:  # checked when it was added
            return
        check_topic(topic)
        task = self._creating.get(topic)
        if task is None:
            task = self._creating[topic] = asyncio.create_task(self._create_topic(topic))
        try:
            await asyncio.shield(task)
        finally:
            if task.done() and self._creating.get(topic) is task:
                del self._creating[topic]

    async def _create_topic(self, topic: str) -> None:
        o = self.options
        if o.auto_create_topics and self._admin is not None:
            try:
                response = await asyncio.wait_for(
                    self._admin.create_topics([NewTopic(topic, o.partitions,
                                                        o.replication_factor)]),
                    o.request_timeout)
            except Exception as exc:
                raise BrokerUnavailableError(
                    f"could not create Kafka topic {topic!r}: {exc!r}") from exc
            for entry in response.topic_errors:
                code = entry[1]
                if code not in (0, _TOPIC_EXISTS):
                    raise BrokerUnavailableError(
                        f"Kafka refused to create topic {topic!r}: error {code} {entry[2:]}")
        self._topics.add(topic)

    # -- publishing ------------------------------------------------------------------------------

    async def publish(self, message: Message) -> None:
        producer = self._enter()
        try:
            if message.topic not in self._topics:  # a known topic costs no coroutine
                await self.ensure_topic(message.topic)
            try:
                future = await producer.send(message.topic, message.body,
                                             key=record_key(message),
                                             headers=record_headers(message))
                await future
            except Exception as exc:
                raise map_publish_error(exc, message.topic) from exc
        finally:
            self._leave()

    async def publish_many(self, messages: Sequence[Message]) -> list[Exception | None]:
        """Send everything (at most ``publish_window`` unconfirmed), then collect confirms."""
        producer = self._enter()
        try:
            return await self._publish_many(producer, messages)
        finally:
            self._leave()

    async def _publish_many(self, producer: AIOKafkaProducer,
                            messages: Sequence[Message]) -> list[Exception | None]:
        results: list[Exception | None] = [None] * len(messages)
        bad_topics: dict[str, Exception] = {}
        for topic in {m.topic for m in messages}:
            try:
                await self.ensure_topic(topic)
            except Exception as exc:
                bad_topics[topic] = exc
        window = self.options.publish_window
        inflight: deque[tuple[int, asyncio.Future[Any]]] = deque()

        async def settle_oldest() -> None:
            index, future = inflight.popleft()
            try:
                await future
            except Exception as exc:
                results[index] = map_publish_error(exc, messages[index].topic)

        send = producer.send
        for index, message in enumerate(messages):
            if bad_topics and message.topic in bad_topics:
                results[index] = bad_topics[message.topic]
                continue
            if len(inflight) >= window:
                await settle_oldest()
            try:
                future = await send(message.topic, message.body, key=record_key(message),
                                    headers=record_headers(message))
            except Exception as exc:
                results[index] = map_publish_error(exc, message.topic)
                continue
            inflight.append((index, future))
        while inflight:
            await settle_oldest()
        return results

    def transaction(self) -> AbstractAsyncContextManager[BrokerTransaction]:
        """All-or-nothing publish on brokers with transactions (see ``capabilities``)."""
        self._require()
        if self._tx_producer is None:
            raise TransactionError("this Kafka broker has no transactions "
                                   "(capabilities.native_transactions is False)")
        return run_transaction(self._tx_producer, self._tx_lock)

    # -- consuming --------------------------------------------------------------------------------

    async def subscribe(
        self,
        topic: str,
        handler: MessageHandler,
        *,
        group: str | None = None,
        max_in_flight: int = 64,
        ordered: bool = False,
    ) -> KafkaSubscription:
        self._require()
        await self.ensure_topic(topic)
        sub = KafkaSubscription(
            bootstrap=self.bootstrap, options=self.options, topic=topic, handler=handler,
            group=group, max_in_flight=max_in_flight, ordered=ordered,
            on_close=self._subs.discard)
        await sub.start()
        if self._state != "connected":  # closed while joining
            await sub.close()
            raise BrokerUnavailableError("Kafka broker client closed while subscribing")
        self._subs.add(sub)
        return sub

    # -- health -----------------------------------------------------------------------------------

    async def health(self) -> Health:
        if self._state != "connected" or self._producer is None:
            return Health(healthy=False, broker=self.name, detail=self._state)
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            metadata = await asyncio.wait_for(self._producer.client.fetch_all_metadata(),
                                              self.options.request_timeout)
        except Exception as exc:
            return Health(healthy=False, broker=self.name, detail=f"metadata failed: {exc!r}",
                          latency=loop.time() - start)
        brokers = len(metadata.brokers())
        return Health(healthy=brokers > 0, broker=self.name,
                      detail=f"{brokers} broker(s) at {','.join(self.bootstrap)}",
                      latency=loop.time() - start,
                      extra={"brokers": brokers, "subscriptions": len(self._subs),
                             "transactions": self.capabilities.native_transactions})
