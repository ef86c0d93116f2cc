"""One ``subscribe()``: a consumer-group member with manual commits and local redelivery."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka import errors as kafka_errors

from sagamesh.brokers.base import MessageHandler
from sagamesh.brokers.kafka_wire import from_record
from sagamesh.errors import BrokerUnavailableError

from ._dispatch import RUNNING, Dispatcher, Item
from ._offsets import PartitionOffsets
from ._options import KafkaOptions

if TYPE_CHECKING:
    from sagamesh.message import Message

log = logging.getLogger(__name__)


class KafkaDelivery:
    """One handover of a record; settle it once (ack, nack or reject)."""

    __slots__ = ("_item", "_settled", "_sub", "attempt", "message", "offset", "partition")

    def __init__(self, sub: KafkaSubscription, item: Item) -> None:
        self._sub = sub
        self._item = item
        self._settled = False
        self.message: Message = item.message
        self.attempt = item.attempt
        self.partition: int | None = item.partition
        self.offset: int | None = item.offset

    @property
    def settled(self) -> bool:
        return self._settled

    async def ack(self) -> None:
        if not self._settled:
            self._settled = True
            self._sub._settle(self._item)

    async def reject(self) -> None:
        """Give up on it: committed like an ack (Kafka has no native dead letter)."""
        if not self._settled:
            self._settled = True
            self._sub._settle(self._item)

    async def nack(self, delay: float | None = None) -> None:
        if not self._settled:
            self._settled = True
            self._sub._dispatch.redeliver(self._item, delay)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, sub: KafkaSubscription) -> None:
        self._sub = sub

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._sub._revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._sub._assigned(list(assigned))


class KafkaSubscription:
    """A member of consumer group ``group`` (or of a private, group-less reader when None).

    Offsets are committed (periodically, on revoke and on close) only up to the first record
    that is not yet acked or rejected, so nothing unsettled is ever skipped by a restart.
    """

    def __init__(
        self,
        *,
        bootstrap: list[str],
        options: KafkaOptions,
        topic: str,
        handler: MessageHandler,
        group: str | None,
        max_in_flight: int,
        ordered: bool,
        on_close: Any,
    ) -> None:
        self.topic = topic
        self.group = group
        self._handler = handler
        self._options = options
        self._on_close = on_close
        self._limit = options.buffer_limit(max_in_flight)
        self._refill = max(1, self._limit // 4)  # a full buffer is refilled in chunks this big
        self._dispatch = Dispatcher(self._run, max_in_flight=max_in_flight, ordered=ordered,
                                    name=f"kafka-sub:{topic}")
        self._offsets: dict[TopicPartition, PartitionOffsets] = {}
        self._epoch = 0
        self._assigned_once = asyncio.Event()
        self._closed = False
        self._close_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        o = options
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            client_id=o.client_id,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset=o.auto_offset_reset,
            session_timeout_ms=int(o.session_timeout * 1000),
            heartbeat_interval_ms=int(o.heartbeat_interval * 1000),
            rebalance_timeout_ms=int(o.rebalance_timeout * 1000),
            max_poll_interval_ms=int(o.max_poll_interval * 1000),
            request_timeout_ms=int(o.request_timeout * 1000),
            isolation_level="read_committed",
            fetch_max_wait_ms=max(1, round(o.fetch_max_wait * 1000)),
            **o.security(),
        )

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Register the member and start fetching.

        With ``auto_offset_reset="earliest"`` (the default) this returns before the group join
        completes: a new group starts at the beginning of the topic and an existing one at its
        committed offset, so a message published after ``subscribe()`` returns is not missed,
        and members that subscribe together join in one rebalance instead of one each. With
        ``latest`` it waits until partitions are assigned and their positions are fixed.
        """
        try:
            await asyncio.wait_for(self._start_consumer(), self._options.subscribe_timeout)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
            if isinstance(exc, TimeoutError | kafka_errors.KafkaError):
                raise BrokerUnavailableError(
                    f"could not join Kafka group {self.group!r} for {self.topic!r}: {exc!r}"
                ) from exc
            raise
        self._tasks = [
            asyncio.create_task(self._fetch_loop(), name=f"kafka-fetch:{self.topic}"),
            asyncio.create_task(self._commit_loop(), name=f"kafka-commit:{self.topic}"),
        ]

    async def _start_consumer(self) -> None:
        consumer = self._consumer
        await consumer.start()  # nothing subscribed yet: start() does not wait for a join
        consumer.subscribe([self.topic], listener=_Rebalance(self))
        if self._options.auto_offset_reset == "earliest":
            return
        if self.group is None:  # no group: partitions come from metadata, not a join
            while not consumer.assignment():  # noqa: ASYNC110 - aiokafka has no event for it
                await asyncio.sleep(0.02)
        else:
            await self._assigned_once.wait()
        for tp in consumer.assignment():
            await consumer.position(tp)  # resolves "latest" now, before anything is published

    async def close(self) -> None:
        """Stop fetching, cancel running handlers (their records are redelivered), commit what
        is settled and leave the group. Idempotent."""
        async with self._close_lock:
            if self._closed:
                return
            self._closed = True
            for task in self._tasks:
                task.cancel()
            handlers = self._dispatch.close()
            await asyncio.gather(*self._tasks, *handlers, return_exceptions=True)
            if self.group is not None:
                await self._commit(within=min(3.0, self._options.request_timeout))
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._consumer.stop(), self._options.request_timeout)
            self._on_close(self)

    # -- handing records over ---------------------------------------------------------------------

    async def _fetch_loop(self) -> None:
        consumer, dispatch = self._consumer, self._dispatch
        loop = asyncio.get_running_loop()
        # A member that does not poll for max_poll_interval is taken for dead; a full buffer
        # polls (paused) this often so slow handlers never cost the group its member.
        keepalive = self._options.max_poll_interval / 3
        polled = loop.time()
        paused = False
        while not self._closed:
            try:
                room = self._limit - len(dispatch.live)
                if room <= 0:
                    waited = loop.time() - polled
                    if waited < keepalive:
                        # Full: wait for handlers to make room, without polling. Polling a
                        # paused partition throws away what aiokafka prefetched for it, and
                        # every refill would then wait for a fresh fetch.
                        await dispatch.room(self._limit - self._refill,
                                            min(1.0, keepalive - waited))
                        continue
                    # Still full after a third of max_poll_interval: pause (again: a rebalance
                    # hands out unpaused partitions) and poll, so the member stays alive.
                    consumer.pause(*consumer.assignment())
                    paused = True
                    polled = loop.time()
                    batch = await consumer.getmany(timeout_ms=0)
                else:
                    if paused:
                        consumer.resume(*consumer.paused())
                        paused = False
                    batch = await consumer.getmany(timeout_ms=500, max_records=min(room, 2000))
                    polled = loop.time()
                if batch:
                    assigned = consumer.assignment()
                    for tp, records in batch.items():
                        if tp in assigned:
                            self._accept(tp, records)
                    dispatch.pump()
            except asyncio.CancelledError:
                raise
            except kafka_errors.ConsumerStoppedError:
                return
            except Exception:
                log.warning("Kafka fetch for %s failed; retrying", self.topic, exc_info=True)
                await asyncio.sleep(0.5)

    def _accept(self, tp: TopicPartition, records: list[Any]) -> None:
        offsets = self._offsets.get(tp)
        dispatch = self._dispatch
        for record in records:
            if offsets is None or not offsets.add(record.offset):
                # First record of an assignment, or the position went back (the broker lost
                # data and the consumer reset): track anew; older items no longer commit.
                self._epoch += 1
                offsets = self._offsets[tp] = PartitionOffsets(self._epoch)
                offsets.add(record.offset)
            dispatch.add(Item(tp, record.offset, offsets.epoch, from_record(record)))

    async def _run(self, item: Item) -> None:
        delivery = KafkaDelivery(self, item)
        try:
            await self._handler(delivery)
        except asyncio.CancelledError:
            raise  # closing: unsettled, so not committed and redelivered to the group
        except Exception:
            log.exception("handler for %s raised; message %s nacked", self.topic,
                          item.message.id)
            if not delivery.settled:
                await delivery.nack()
        else:
            if not delivery.settled:
                await delivery.ack()

    def _settle(self, item: Item) -> None:
        if item.state != RUNNING:
            return
        offsets = self._offsets.get(item.tp)
        if offsets is not None and offsets.epoch == item.epoch:
            offsets.settle(item.offset)
        self._dispatch.done(item)

    # -- commits and rebalances -------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while not self._closed:  # also ends a loop whose cancellation something swallowed
            await asyncio.sleep(self._options.commit_interval)
            await self._commit()

    async def _commit(self, tps: Iterable[TopicPartition] | None = None,
                      within: float | None = None) -> None:
        """Commit the settled prefix of ``tps`` (all owned partitions by default).

        A commit that does not complete ``within`` seconds is given up (aiokafka would retry it
        with the same offsets until the coordinator answers); the next one sends fresh offsets.
        """
        if self.group is None:
            return
        chosen = self._offsets if tps is None else {
            tp: self._offsets[tp] for tp in tps if tp in self._offsets}
        assigned = self._consumer.assignment()
        commit = {tp: o.committable for tp, o in chosen.items()
                  if o.dirty and o.committable is not None and tp in assigned}
        if not commit:
            return
        within = self._options.request_timeout if within is None else within
        try:
            # not asyncio.wait_for: on 3.11 it swallows a cancellation that arrives as the
            # commit completes, and close() then waited forever for this loop
            async with asyncio.timeout(within):
                await self._consumer.commit(commit)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # rebalancing or broker away: the next commit covers it
            log.debug("Kafka commit for %s failed: %r", self.topic, exc)
            return
        for tp, offset in commit.items():
            tracked = self._offsets.get(tp)
            if tracked is not None and tracked is chosen.get(tp):
                tracked.committed = offset

    async def _revoked(self, revoked: list[TopicPartition]) -> None:
        """Before another member takes them: let running handlers settle, commit, forget."""
        if not revoked:
            return
        dispatch = self._dispatch
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._options.revoke_timeout
        while not self._closed and dispatch.running_of(revoked):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await dispatch.changed(remaining)
        await self._commit(revoked)
        dispatch.drop(revoked)
        for tp in revoked:
            self._offsets.pop(tp, None)

    def _assigned(self, assigned: list[TopicPartition]) -> None:
        self._assigned_once.set()
