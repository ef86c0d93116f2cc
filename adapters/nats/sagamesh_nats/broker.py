"""``NatsBroker``: the sagamesh Broker on NATS JetStream (nats-py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sagamesh._eager import DeadlineQueue, finish_by, finish_within
from sagamesh.brokers.base import Capabilities, Health, MessageHandler
from sagamesh.brokers.nats_wire import header_block
from sagamesh.errors import (
    BrokerUnavailableError,
    ConfigError,
    PublishTimeoutError,
    SagameshError,
    SerializationError,
)
from sagamesh.message import Message

from .naming import check_subject, consumer_name, safe_name, stream_name
from .options import NatsOptions
from .publisher import FLUSH_EVERY, PubAckInbox
from .subscription import NatsSubscription

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js.client import JetStreamContext
    from nats.js.kv import KeyValue
    from nats.js.manager import JetStreamManager

log = logging.getLogger("sagamesh_nats")


class NatsBroker:
    """JetStream streams per topic, durable pull consumers per group, confirmed publishes.

    ``url`` may list several servers separated by commas; options: see :class:`NatsOptions`.
    """

    name = "nats"
    capabilities = Capabilities(
        persistent=True,
        # For ordered=True subscriptions: one active member per group (a KV lease) and a key
        # hold that also waits for a nacked message to come back before the key's next one.
        ordered_by_key=True,
        consumer_groups=True,
        native_transactions=False,
        delayed_redelivery=True,
        native_dead_letter=False,
    )

    def __init__(self, url: str = "nats://127.0.0.1:4222", **options: Any) -> None:
        self.url = url
        self.servers = [s.strip() for s in url.split(",") if s.strip()]
        if not self.servers:
            raise ConfigError("empty NATS url", field="broker.url")
        self.options = NatsOptions.from_kwargs(options)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._jsm: JetStreamManager | None = None
        self._streams: dict[str, tuple[str, bool]] = {}  # topic -> (stream, shared)
        self._stream_tasks: dict[str, asyncio.Task[tuple[str, bool]]] = {}
        self._subs: set[NatsSubscription] = set()
        self._inbox: PubAckInbox | None = None  # our publishes' PubAcks
        # single publishes' PubAck waits (all publish_timeout long) share one timer
        self._ack_deadlines = DeadlineQueue(self.options.publish_timeout)
        self._leases: KeyValue | None = None
        self.lease_ttl = self.options.lease_ttl  # lowered to the lease bucket's TTL if shorter
        self._publishing = 0
        self._published_idle = asyncio.Event()
        self._published_idle.set()
        self._closing = False
        self._close_task: asyncio.Task[None] | None = None
        self._stopping = 0  # closing subscriptions that still have pull requests out
        self._stop_waiters: list[asyncio.Future[None]] = []

    # -- lifecycle -----------------------------------------------------------------------------

    async def connect(self) -> None:
        if self._nc is not None and not self._closing:
            return
        import nats

        opts = self.options
        self._closing = False
        self._close_task = None
        connect_options: dict[str, Any] = {
            "name": opts.client_name,
            "connect_timeout": opts.connect_timeout,
            "reconnect_time_wait": opts.reconnect_time_wait,
            "max_reconnect_attempts": -1,  # a broker restart is waited out, never fatal
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
            **opts.connect_options,
        }
        try:
            nc = await asyncio.wait_for(nats.connect(self.servers, **connect_options),
                                        opts.connect_timeout * 2)
        except Exception as exc:
            raise BrokerUnavailableError(f"cannot connect to NATS at {self.url}: "
                                         f"{exc or type(exc).__name__}") from exc
        try:
            inbox = PubAckInbox(nc, opts.max_pending_publishes)
            await inbox.start()
        except BaseException:
            await nc.close()
            raise
        self._nc = nc
        self._inbox = inbox
        self._js = nc.jetstream(timeout=opts.api_timeout)
        self._jsm = nc.jsm(timeout=opts.api_timeout)

    async def close(self) -> None:
        """Finish in-flight publishes, return unsettled deliveries, close. Idempotent."""
        if self._nc is None:
            return
        if self._close_task is None:
            self._closing = True
            self._close_task = asyncio.ensure_future(self._close())
        await asyncio.shield(self._close_task)

    async def _close(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._published_idle.wait(), self.options.publish_timeout)
        await asyncio.gather(*(sub.close() for sub in list(self._subs)), return_exceptions=True)
        for task in self._stream_tasks.values():
            task.cancel()
        nc, self._nc = self._nc, None
        self._js = self._jsm = None
        self._inbox = None
        self._leases = None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()

    async def __aenter__(self) -> NatsBroker:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _client(self) -> Client:
        nc = self._nc
        if nc is None or nc.is_closed:
            raise BrokerUnavailableError("NATS broker is not connected (use `async with`)")
        return nc

    def _require_open(self) -> tuple[JetStreamContext, JetStreamManager]:
        if self._closing or self._js is None or self._jsm is None:
            raise BrokerUnavailableError("NATS broker is closed or not connected")
        return self._js, self._jsm

    def _require_inbox(self) -> PubAckInbox:
        inbox = self._inbox
        if self._closing or inbox is None:
            raise BrokerUnavailableError("NATS broker is closed or not connected")
        return inbox

    async def _on_error(self, exc: Exception) -> None:
        log.debug("NATS connection error: %s", exc)

    async def _on_disconnected(self) -> None:
        log.info("NATS disconnected from %s; reconnecting", self.url)
        # A PubAck in flight is lost with the connection: fail those publishes now rather
        # than after the publish timeout; publishing again is safe (Nats-Msg-Id de-duplicates).
        if self._inbox is not None:
            self._inbox.fail_all(
                BrokerUnavailableError("NATS connection lost before the PubAck arrived"))

    async def _on_reconnected(self) -> None:
        log.info("NATS reconnected to %s", self.url)
        for sub in list(self._subs):
            sub.on_reconnected()

    # -- streams and consumers -----------------------------------------------------------------

    async def _stream_for(self, topic: str) -> tuple[str, bool]:
        """The stream holding ``topic`` (created on first use); ``shared`` if it holds others."""
        found = self._streams.get(topic)
        if found is not None:
            return found
        task = self._stream_tasks.get(topic)
        if task is None or (task.done() and (task.cancelled() or task.exception())):
            task = asyncio.ensure_future(self._find_or_create_stream(topic))
            self._stream_tasks[topic] = task
        result = await asyncio.shield(task)
        self._streams[topic] = result
        return result

    async def _find_or_create_stream(self, topic: str) -> tuple[str, bool]:
        from nats.js.api import RetentionPolicy, StorageType, StreamConfig
        from nats.js.errors import APIError, NotFoundError

        jsm = self._jsm  # in-flight publishes may still create a stream while closing
        if jsm is None:
            raise BrokerUnavailableError("NATS broker is closed or not connected")
        opts = self.options
        for _attempt in range(3):
            try:
                name = await jsm.find_stream_name_by_subject(topic)
                info = await jsm.stream_info(name)
                return name, list(info.config.subjects or []) != [topic]
            except NotFoundError:
                pass
            config = StreamConfig(
                name=stream_name(opts.stream_prefix, topic),
                subjects=[topic],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE if opts.storage == "file" else StorageType.MEMORY,
                num_replicas=opts.replicas,
                max_age=opts.max_age,
                max_msgs=opts.max_msgs,
                max_bytes=opts.max_bytes,
                duplicate_window=opts.duplicate_window,
            )
            try:
                await jsm.add_stream(config)
                return config.name or "", False
            except APIError as exc:
                # Raced with another client, or the name/subjects are taken: look again.
                log.debug("NATS: creating stream for %s failed (%s); looking again", topic, exc)
                last: Exception = exc
        raise BrokerUnavailableError(f"NATS: no stream for topic {topic!r}: {last}")

    async def _create_consumer(self, stream: str, config: Any) -> None:
        from nats.js.errors import APIError

        _, jsm = self._require_open()
        try:
            await jsm.add_consumer(stream, config)
        except APIError as exc:
            if config.durable_name:
                # An existing durable whose fixed settings differ (e.g. deliver policy): use it.
                try:
                    await jsm.consumer_info(stream, config.durable_name)
                    log.warning("NATS: consumer %s on %s kept its existing config (%s)",
                                config.durable_name, stream, exc)
                    return
                except APIError:
                    pass
            raise

    async def _lease_bucket(self, ttl: float) -> KeyValue:
        """The KV bucket holding ordered-group leases (created on first use)."""
        if self._leases is not None:
            return self._leases
        from nats.js.api import KeyValueConfig, StorageType
        from nats.js.errors import APIError

        js, _ = self._require_open()
        bucket = safe_name(f"{self.options.stream_prefix}leases")
        try:
            kv = await js.create_key_value(KeyValueConfig(
                bucket=bucket, history=1, ttl=ttl, storage=StorageType.FILE,
                replicas=self.options.replicas))
        except APIError:  # exists with other settings: use it as it is
            kv = await js.key_value(bucket)
            existing = (await kv.status()).ttl
            if existing and existing < ttl:
                log.warning("NATS: lease bucket %s expires leases after %.1fs, not lease_ttl "
                            "%.1fs; leases are refreshed for the shorter one", bucket,
                            existing, ttl)
                self.lease_ttl = existing
        self._leases = kv
        return kv

    async def _delete_consumer(self, stream: str, consumer: str) -> None:
        if self._jsm is not None:
            await self._jsm.delete_consumer(stream, consumer)

    # -- publishing ----------------------------------------------------------------------------

    def _begin_publish(self) -> None:
        self._publishing += 1
        self._published_idle.clear()

    def _end_publish(self) -> None:
        self._publishing -= 1
        if not self._publishing:
            self._published_idle.set()

    async def publish(self, message: Message) -> None:
        """Returns once JetStream stored the message (PubAck)."""
        inbox = self._require_inbox()
        topic = message.topic
        streams = self._streams
        if topic not in streams:  # a topic with a stream was checked when it got it
            check_subject(topic)
        headers = header_block(message)
        self._begin_publish()
        try:
            for attempt in (1, 2):
                if topic not in streams:
                    await self._stream_for(topic)
                try:
                    if inbox.pending >= inbox.window and not await inbox.room(
                            self.options.publish_timeout):
                        raise self._stalled()
                    future = inbox.send(topic, headers, message.body)
                    await inbox.kick()
                    # not asyncio.wait_for (a waiter future, a callback and a timer per call)
                    # nor a timer of its own: on expiry the PubAck future is cancelled.
                    if await finish_by(future, self._ack_deadlines):
                        inbox.prune()
                        raise TimeoutError
                    return
                except Exception as exc:
                    from nats.js.errors import NoStreamResponseError

                    if not isinstance(exc, NoStreamResponseError):
                        raise _publish_error(exc, message) from exc
                    streams.pop(topic, None)  # deleted behind our back: create it again
                    self._stream_tasks.pop(topic, None)
                    if attempt == 2:
                        raise BrokerUnavailableError(
                            f"NATS: no JetStream stream answered for {topic!r}") from None
        finally:
            self._end_publish()

    def _stalled(self) -> PublishTimeoutError:
        return PublishTimeoutError(
            f"NATS: no PubAck for {self.options.max_pending_publishes} publishes "
            f"within {self.options.publish_timeout} s")

    async def publish_many(self, messages: Sequence[Message]) -> list[Exception | None]:
        """Write every publish at once (bounded by ``max_pending_publishes`` PubAcks in
        flight), then collect the acks: one result per message, in order."""
        inbox = self._require_inbox()
        self._begin_publish()
        try:
            return await self._publish_many(inbox, messages)
        finally:
            self._end_publish()

    async def _publish_many(self, inbox: PubAckInbox,
                            messages: Sequence[Message]) -> list[Exception | None]:
        results: list[Exception | None] = [None] * len(messages)
        bad_topics: dict[str, Exception] = {}
        for topic in {m.topic for m in messages}:
            try:
                await self._stream_for(check_subject(topic))
            except SagameshError as exc:
                bad_topics[topic] = exc
        timeout = self.options.publish_timeout
        futures: list[tuple[asyncio.Future[Any], int]] = []
        loop = asyncio.get_running_loop()
        all_acked: asyncio.Future[None] = loop.create_future()
        unacked = 0
        sending = True  # every PubAck may arrive while later messages still wait for the window

        def acked(future: asyncio.Future[Any]) -> None:
            # One callback per PubAck does what tracking it in a set and asyncio.wait would
            # do with two (each done callback is a loop handle: ~1 us per message).
            nonlocal unacked
            unacked -= 1
            if not unacked and not sending and not all_acked.done():
                all_acked.set_result(None)

        window = inbox.window
        for index, message in enumerate(messages):
            bad = bad_topics.get(message.topic)
            if bad is not None:
                results[index] = bad
                continue
            if inbox.pending >= window and not await inbox.room(timeout):
                stalled = self._stalled()
                for rest in range(index, len(messages)):
                    results[rest] = stalled
                break
            try:
                future = inbox.send(message.topic, header_block(message), message.body)
            except Exception as exc:
                results[index] = _publish_error(exc, message)
                continue
            futures.append((future, index))
            unacked += 1
            future.add_done_callback(acked)
            if inbox.queued > FLUSH_EVERY:
                await inbox.flush()
        sending = False
        await inbox.kick()
        if unacked:
            await finish_within(all_acked, timeout)  # late PubAcks are reported below
        expired = False
        for future, index in futures:
            if not future.done():
                future.cancel()
                expired = True
            if future.cancelled():
                results[index] = PublishTimeoutError(
                    f"NATS: no PubAck for {messages[index].id} within {timeout} s")
            elif (error := future.exception()) is not None:
                results[index] = _publish_error(error, messages[index])
        if expired:
            inbox.prune()
        return results

    # -- subscribing ---------------------------------------------------------------------------

    async def subscribe(
        self,
        topic: str,
        handler: MessageHandler,
        *,
        group: str | None = None,
        max_in_flight: int = 64,
        ordered: bool = False,
    ) -> NatsSubscription:
        """A pull consumer: durable named after ``group``, ephemeral for ``group=None``."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        self._require_open()
        check_subject(topic)
        stream, shared = await self._stream_for(topic)
        opts = self.options
        max_in_flight = max(1, max_in_flight)
        config = ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=opts.ack_wait,
            max_deliver=-1,
            filter_subject=topic,
            max_ack_pending=opts.max_ack_pending or max(256, 4 * max_in_flight),
        )
        if group is not None:
            name = consumer_name(group, topic, shared_stream=shared)
            config.name = config.durable_name = name
            config.deliver_policy = (DeliverPolicy.ALL if opts.deliver_policy == "all"
                                     else DeliverPolicy.NEW)
        else:
            name = f"sagamesh_eph_{uuid.uuid4().hex}"
            config.name = name
            config.deliver_policy = DeliverPolicy.NEW
            config.inactive_threshold = opts.inactive_threshold
        sub = NatsSubscription(self, topic, group, handler, stream=stream, consumer=name,
                               config=config, max_in_flight=max_in_flight, ordered=ordered)
        try:
            await sub.start()
        except Exception as exc:
            await sub.close()
            if isinstance(exc, SagameshError):
                raise
            raise BrokerUnavailableError(f"NATS: cannot subscribe to {topic!r}: {exc}") from exc
        self._subs.add(sub)
        return sub

    def _stopped(self) -> None:
        self._stopping -= 1
        if not self._stopping:
            waiters, self._stop_waiters = self._stop_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def _siblings_stopped(self) -> None:
        if self._stopping:
            waiter = asyncio.get_running_loop().create_future()
            self._stop_waiters.append(waiter)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, self.options.api_timeout)

    def _detach(self, sub: NatsSubscription) -> None:
        self._subs.discard(sub)

    # -- health --------------------------------------------------------------------------------

    async def health(self) -> Health:
        nc = self._nc
        if nc is None or self._closing or not nc.is_connected:
            state = "closed" if nc is None or self._closing else "reconnecting"
            return Health(healthy=False, broker=self.name, detail=state)
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            await nc.flush(timeout=5)
            rtt = loop.time() - start
            assert self._jsm is not None
            account = await self._jsm.account_info()
        except Exception as exc:
            return Health(healthy=False, broker=self.name, detail=f"unhealthy: {exc}")
        return Health(healthy=True, broker=self.name, detail=f"connected to {nc.connected_url}",
                      latency=rtt, extra={"streams": account.streams,
                                          "consumers": account.consumers,
                                          "server_version": str(nc.connected_server_version)})


def _publish_error(exc: BaseException, message: Message) -> Exception:
    import nats.errors
    from nats.js.errors import APIError, NoStreamResponseError

    if isinstance(exc, SagameshError):
        return exc
    if isinstance(exc, nats.errors.MaxPayloadError):
        return SerializationError(f"message {message.id} ({len(message.body)} bytes) is larger "
                                  "than the NATS server's max_payload")
    if isinstance(exc, TimeoutError | nats.errors.TimeoutError):
        return PublishTimeoutError(f"NATS: no PubAck for {message.id}")
    if isinstance(exc, NoStreamResponseError):
        return BrokerUnavailableError(f"NATS: no stream answered for {message.topic!r}")
    if isinstance(exc, APIError):
        return BrokerUnavailableError(f"NATS JetStream rejected {message.id}: {exc}")
    return BrokerUnavailableError(f"NATS: cannot publish {message.id}: "
                                  f"{exc or type(exc).__name__}")
