"""Kafka transactions: detected at connect, used only where the broker really has them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaProducer

from sagamesh.brokers.kafka_wire import record_headers, record_key
from sagamesh.errors import TransactionError
from sagamesh.message import Message

from ._options import KafkaOptions, check_topic

log = logging.getLogger(__name__)


async def broker_has_transactions(client: Any, transactional_id: str, within: float) -> bool:
    """Ask the broker for a transactional producer id, as a transactional producer would.

    Done with raw requests on an existing connection: a broker without transactions (tansu,
    old Kafka) refuses FindCoordinator(transaction) or InitProducerId, and this costs a round
    trip or two instead of an aiokafka producer that logs an error while it fails.
    """
    from aiokafka.client import CoordinationType
    from aiokafka.protocol.transaction import InitProducerIdRequest

    try:
        async with asyncio.timeout(within):
            node = await client.coordinator_lookup(CoordinationType.TRANSACTION,
                                                   transactional_id)
            response = await client.send(node, InitProducerIdRequest(transactional_id, 60_000))
    except Exception as exc:
        log.info("Kafka broker has no transactions (%r)", exc)
        return False
    if response.error_code:
        log.info("Kafka broker has no transactions (InitProducerId error %s)",
                 response.error_code)
    return bool(response.error_code == 0)


async def open_transactional_producer(
    client: Any, bootstrap: list[str], options: KafkaOptions, transactional_id: str
) -> AIOKafkaProducer | None:
    """A started transactional producer, or None when the broker cannot do transactions."""
    timeout = options.transaction_probe_timeout
    if not await broker_has_transactions(client, transactional_id, timeout):
        return None
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=f"{options.client_id}-tx",
        acks="all",
        enable_idempotence=True,
        transactional_id=transactional_id,
        request_timeout_ms=int(options.request_timeout * 1000),
        linger_ms=options.linger_ms,
        max_batch_size=options.max_batch_size,
        **options.security(),
    )
    try:
        await asyncio.wait_for(producer.start(), timeout)
    except Exception as exc:
        log.warning("Kafka transactional producer did not start (%r); using none", exc)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(producer.stop(), timeout)
        return None
    return producer


class KafkaTransaction:
    """Collects sends of one transaction; all are flushed before the commit."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self.futures: list[asyncio.Future[Any]] = []

    async def publish(self, message: Message) -> None:
        check_topic(message.topic)
        future = await self._producer.send(
            message.topic, message.body, key=record_key(message),
            headers=record_headers(message))
        self.futures.append(future)


@contextlib.asynccontextmanager
async def run_transaction(producer: AIOKafkaProducer,
                          lock: asyncio.Lock) -> AsyncIterator[KafkaTransaction]:
    """Commit on normal exit, abort on an exception (which propagates unchanged)."""
    async with lock:  # one transactional producer runs one transaction at a time
        try:
            await producer.begin_transaction()
        except Exception as exc:
            raise TransactionError(f"could not begin a Kafka transaction: {exc!r}") from exc
        tx = KafkaTransaction(producer)
        try:
            yield tx
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.abort_transaction()
            raise
        try:
            await asyncio.gather(*tx.futures)
            await producer.commit_transaction()
        except Exception as exc:
            with contextlib.suppress(Exception):
                await producer.abort_transaction()
            raise TransactionError(f"Kafka transaction not committed: {exc!r}") from exc
