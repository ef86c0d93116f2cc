"""``RabbitBroker``: the sagamesh Broker protocol on RabbitMQ (aio-pika, robust connection)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from sagamesh.brokers.base import BrokerTransaction, Capabilities, Health, MessageHandler
from sagamesh.errors import BrokerUnavailableError, ConfigError
from sagamesh.message import Message

from . import _topology as topology
from ._codec import properties
from ._options import RabbitOptions, parse_options
from ._publish import ConfirmingPublisher
from ._subscription import RabbitSubscription
from ._transaction import TransactionChannels

if TYPE_CHECKING:
    from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
    from pamqp.commands import Basic

log = logging.getLogger("sagamesh_rabbitmq")

_MAX_ROUTING_KEY = 255


def _ssl_context(tls: Any) -> ssl.SSLContext | None:
    """An SSL context from sagamesh's TLS settings (``ca_file``, ``cert_file``, ``key_file``,
    ``verify``), or ``None`` when TLS is off."""
    if tls is None or isinstance(tls, ssl.SSLContext):
        return tls
    if not getattr(tls, "enabled", True):
        return None
    ca_file = getattr(tls, "ca_file", None)
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    cert_file = getattr(tls, "cert_file", None)
    if cert_file:
        key_file = getattr(tls, "key_file", None)
        context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    if not getattr(tls, "verify", True):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class RabbitBroker:
    """RabbitMQ through one robust aio-pika connection.

    Topics are routing keys on a durable topic exchange; a consumer group is a durable queue bound
    to its topic (``<exchange>:<topic>:<group>``); publishes are persistent and confirmed. See
    ``docs/broker-rabbitmq.md``.
    """

    name = "rabbitmq"
    capabilities = Capabilities(
        persistent=True,
        ordered_by_key=True,  # for ordered=True subscriptions: single active consumer + key hold
        consumer_groups=True,
        native_transactions=True,
        delayed_redelivery=True,  # per-delay TTL queues dead-lettering back to the group queue
        native_dead_letter=False,  # reject drops the message; sagamesh publishes DLQ copies
    )

    def __init__(self, url: str = "amqp://guest:guest@127.0.0.1:5672/", **options: Any) -> None:
        self._ssl = _ssl_context(options.pop("tls", None))
        self.url, self.options = parse_options(url, options)
        self._connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractRobustChannel | None = None
        self._topology_channel: AbstractRobustChannel | None = None
        self._publisher: ConfirmingPublisher | None = None
        self._tx = TransactionChannels(self.options.tx_channels)
        self._subs: set[RabbitSubscription] = set()
        self._delay_declared: dict[tuple[str, int], float] = {}
        self._group_queues: set[str] = set()
        self._closed = False
        self._connect_lock = asyncio.Lock()

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def exchange(self) -> str:
        return self.options.exchange

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed

    @property
    def online(self) -> bool:
        """Connected right now (False while the robust connection is reconnecting)."""
        connection = self._connection
        return connection is not None and connection.connected.is_set()

    async def connect(self) -> None:
        import aio_pika
        from aio_pika.exceptions import CONNECTION_EXCEPTIONS

        async with self._connect_lock:
            if self._connection is not None:
                return
            self._closed = False
            opts = self.options
            try:
                connection = await aio_pika.connect_robust(
                    self.url, reconnect_interval=opts.reconnect_interval,
                    timeout=opts.connect_timeout, ssl_context=self._ssl,
                    client_properties={"connection_name": "sagamesh"},
                )
            except (*CONNECTION_EXCEPTIONS, TimeoutError) as exc:
                raise BrokerUnavailableError(
                    f"cannot connect to RabbitMQ at {_display(self.url)}: {exc!r}") from exc
            try:
                channel = await connection.channel(publisher_confirms=True,
                                                   on_return_raises=True)
                await channel.declare_exchange(opts.exchange, aio_pika.ExchangeType.TOPIC,
                                               durable=True)
                self._topology_channel = await connection.channel(publisher_confirms=False)
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    await connection.close()
                if isinstance(exc, Exception):
                    raise _declare_error(
                        exc, f"exchange {opts.exchange!r}", field="exchange",
                        hint="it exists with another type; pick another exchange name") from exc
                raise
            self._connection = connection
            self._publish_channel = channel
            self._publisher = ConfirmingPublisher(
                channel, timeout=opts.publish_timeout, window=opts.publish_window,
                mandatory=opts.mandatory)

    async def close(self) -> None:
        """Cancel consumers (unsettled messages return to their queues), then disconnect."""
        if self._closed:
            return
        self._closed = True  # no new publishes or subscriptions from here on
        await asyncio.gather(*(sub.close() for sub in list(self._subs)),
                             return_exceptions=True)
        publisher = self._publisher
        if publisher is not None:
            # Flush: publishes already started (and handlers' retries) get their confirm first.
            await publisher.drain(self.options.publish_timeout)
            publisher.closed = True
        tx, self._tx = self._tx, TransactionChannels(self.options.tx_channels)
        await tx.close()
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()
        self._publish_channel = self._topology_channel = None
        self._publisher = None

    async def __aenter__(self) -> RabbitBroker:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _require(self) -> AbstractRobustConnection:
        if self._closed or self._connection is None:
            raise BrokerUnavailableError("RabbitMQ broker is not connected (use `async with`)")
        return self._connection

    def _require_publisher(self) -> ConfirmingPublisher:
        self._require()
        assert self._publisher is not None
        return self._publisher

    # -- publishing ----------------------------------------------------------------------------

    async def publish(self, message: Message) -> None:
        _check_topic(message.topic)
        await self._require_publisher().publish(
            self.exchange, message.topic, message.body, properties(message))

    async def publish_many(self, messages: Sequence[Message]) -> list[Exception | None]:
        publisher = self._require_publisher()
        items: list[tuple[str, bytes, Basic.Properties]] = []
        invalid: dict[int, Exception] = {}
        for index, message in enumerate(messages):
            try:
                _check_topic(message.topic)
            except ConfigError as exc:
                invalid[index] = exc
                continue
            items.append((message.topic, message.body, properties(message)))
        results = await publisher.publish_many(self.exchange, items)
        if not invalid:
            return results
        merged: list[Exception | None] = []
        sent = iter(results)
        for index in range(len(messages)):
            merged.append(invalid[index] if index in invalid else next(sent))
        return merged

    async def _republish(self, queue: str, body: bytes, props: Basic.Properties) -> None:
        """Confirmed publish straight into ``queue`` (default exchange): retries, delays.

        Allowed while the broker closes, so handlers being drained can still retry."""
        publisher = self._publisher
        if publisher is None:
            raise BrokerUnavailableError("RabbitMQ broker is not connected")
        # mandatory: if the queue is gone the retry must fail (and the original be requeued)
        # rather than vanish while the original is acked.
        await publisher.publish("", queue, body, props, mandatory=True)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[BrokerTransaction]:
        """A native AMQP transaction: all messages are routed on commit, none on rollback."""
        connection = self._require()
        async with self._tx.transaction(connection, self.exchange,
                                        self.options.publish_timeout) as tx:
            yield tx

    # -- consuming -----------------------------------------------------------------------------

    async def subscribe(
        self,
        topic: str,
        handler: MessageHandler,
        *,
        group: str | None = None,
        max_in_flight: int = 64,
        ordered: bool = False,
    ) -> RabbitSubscription:
        """Consume ``topic``; ``group`` members share one durable queue, ``None`` gets a private
        queue that lives as long as the subscription."""
        connection = self._require()
        _check_topic(topic)
        anonymous = group is None
        if anonymous:
            queue_name = topology.anonymous_queue(self.exchange, topic)
            arguments = topology.group_arguments(ordered=ordered, queue_type="classic")
        else:
            assert group is not None
            if not group:
                raise ConfigError("a consumer group name must not be empty", field="group")
            queue_name = topology.group_queue(self.exchange, topic, group)
            arguments = topology.group_arguments(ordered=ordered,
                                                 queue_type=self.options.queue_type)
        sub = RabbitSubscription(self, topic, group, queue_name, handler,
                                 max_in_flight=max_in_flight, ordered=ordered,
                                 drain_timeout=self.options.drain_timeout)
        channel: AbstractRobustChannel | None = None
        try:
            async with asyncio.timeout(self.options.publish_timeout):
                channel = await connection.channel(publisher_confirms=False)
                await channel.set_qos(prefetch_count=max(1, max_in_flight))
                queue = await channel.declare_queue(
                    queue_name, durable=not anonymous, exclusive=anonymous,
                    auto_delete=anonymous, arguments=arguments)
                await queue.bind(self.exchange, routing_key=topic)
                if not anonymous:
                    self._group_queues.add(queue_name)
                self._subs.add(sub)
                await sub.start(channel, queue)
        except BaseException as exc:
            self._subs.discard(sub)
            if channel is not None:
                with contextlib.suppress(Exception):
                    await channel.close()
            if isinstance(exc, TimeoutError):
                raise BrokerUnavailableError(
                    f"RabbitMQ did not set up {queue_name!r} within "
                    f"{self.options.publish_timeout:.1f}s") from exc
            if isinstance(exc, Exception):
                raise _declare_error(exc, f"queue {queue_name!r}") from exc
            raise
        return sub

    def _detach(self, sub: RabbitSubscription) -> None:
        self._subs.discard(sub)

    async def _delay_queue(self, target: str, delay: float) -> str:
        """The delay queue that holds a retry ``delay`` seconds before it returns to ``target``;
        declared (again) before RabbitMQ could have expired it."""
        ms = topology.delay_bucket_ms(delay)
        name = topology.delay_queue(target, ms)
        margin_ms = int(self.options.delay_queue_ttl_margin * 1000)
        now = time.monotonic()
        declared = self._delay_declared.get((target, ms))
        if declared is None or now - declared > margin_ms / 2000:
            channel = self._topology_channel
            if channel is None:
                raise BrokerUnavailableError("RabbitMQ broker is not connected")
            await channel.declare_queue(
                name, durable=True, robust=False,
                arguments=topology.delay_arguments(target, ms, margin_ms))
            self._delay_declared[(target, ms)] = now
        return name

    # -- operations ----------------------------------------------------------------------------

    async def health(self) -> Health:
        """Healthy when connected and a round trip (passive exchange declare) succeeds."""
        connection = self._connection
        if self._closed or connection is None:
            return Health(healthy=False, broker=self.name, detail="closed")
        if connection.is_closed or not connection.connected.is_set():
            return Health(healthy=False, broker=self.name, detail="reconnecting",
                          extra={"url": _display(self.url)})
        channel = self._topology_channel
        assert channel is not None
        start = time.perf_counter()
        try:
            async with asyncio.timeout(5):
                raw = await channel.get_underlay_channel()
                await raw.exchange_declare(self.exchange, passive=True)
        except Exception as exc:
            return Health(healthy=False, broker=self.name, detail=f"round trip failed: {exc!r}")
        latency = time.perf_counter() - start
        extra: dict[str, object] = {"url": _display(self.url), "exchange": self.exchange,
                                    "subscriptions": len(self._subs)}
        if self._publisher is not None:
            extra["publish_retries"] = self._publisher.retries
        return Health(healthy=True, broker=self.name, detail="connected", latency=latency,
                      extra=extra)

    def declared_queues(self) -> list[str]:
        """Durable queues this broker declared: consumer-group queues and delay queues."""
        names = set(self._group_queues)
        names |= {topology.delay_queue(t, ms) for t, ms in self._delay_declared}
        return sorted(names)

    async def delete_topology(self, *queues: str) -> None:
        """Delete the exchange, the group and delay queues this broker declared and ``queues``.

        For tests and tear-down: RabbitMQ keeps durable queues until they are deleted. Closes
        this broker's subscriptions first (a live robust consumer would re-declare its queue).
        """
        channel = self._topology_channel
        if channel is None:
            raise BrokerUnavailableError("RabbitMQ broker is not connected")
        await asyncio.gather(*(sub.close() for sub in list(self._subs)), return_exceptions=True)
        for name in set(queues) | set(self.declared_queues()):
            with contextlib.suppress(Exception):
                await channel.queue_delete(name)
        with contextlib.suppress(Exception):
            await channel.exchange_delete(self.exchange)


def _check_topic(topic: str) -> None:
    if not topic or len(topic.encode()) > _MAX_ROUTING_KEY:
        raise ConfigError(f"topic {topic[:40]!r} must be 1..255 bytes (an AMQP routing key)",
                          field="topic")


def _declare_error(exc: Exception, what: str, *, field: str = "group",
                   hint: str = "e.g. a group subscribed both ordered and unordered, or with "
                               "another queue_type") -> Exception:
    from aiormq.exceptions import ChannelPreconditionFailed

    if isinstance(exc, ChannelPreconditionFailed):
        return ConfigError(
            f"RabbitMQ refused to declare {what} with different arguments than it already has "
            f"({exc}); {hint}", field=field)
    if isinstance(exc, BrokerUnavailableError | ConfigError):
        return exc
    return BrokerUnavailableError(f"RabbitMQ refused {what}: {exc!r}")


def _display(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
    return url


__all__ = ["RabbitBroker", "RabbitOptions"]
