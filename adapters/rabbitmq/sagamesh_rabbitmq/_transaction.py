"""Native AMQP transactions: ``tx.select`` / ``tx.commit`` / ``tx.rollback`` on channels kept
for the purpose (a channel in confirm mode cannot be transactional).

Messages published inside the transaction are sent at once but RabbitMQ routes none of them
before ``tx.commit``; on rollback (or a lost connection) it discards them all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from sagamesh.errors import BrokerUnavailableError, TransactionError
from sagamesh.message import Message

from ._codec import properties

if TYPE_CHECKING:
    import aiormq.abc
    from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection


class RabbitTransaction:
    """Collects publishes on a transactional channel; committed by the context manager."""

    def __init__(self, channel: aiormq.abc.AbstractChannel, exchange: str) -> None:
        self._channel = channel
        self._exchange = exchange
        self.published = 0
        self._open = True

    async def publish(self, message: Message) -> None:
        if not self._open:
            raise TransactionError("the transaction is finished; publish inside `async with`")
        from aiormq.exceptions import AMQPError

        try:
            await self._channel.basic_publish(
                message.body, exchange=self._exchange, routing_key=message.topic,
                properties=properties(message),
            )
        except (AMQPError, ConnectionError, RuntimeError) as exc:
            raise BrokerUnavailableError(
                f"RabbitMQ connection lost inside a transaction: {exc!r}") from exc
        self.published += 1


class TransactionChannels:
    """A small pool of transactional channels, opened on first use."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._free: asyncio.Queue[AbstractRobustChannel] = asyncio.Queue()
        self._all: list[AbstractRobustChannel] = []
        self._lock = asyncio.Lock()

    async def _acquire(self, connection: AbstractRobustConnection) -> AbstractRobustChannel:
        async with self._lock:
            if self._free.empty() and len(self._all) < self._size:
                channel = await connection.channel(publisher_confirms=False)
                self._all.append(channel)
                return channel
        return await self._free.get()

    @contextlib.asynccontextmanager
    async def transaction(self, connection: AbstractRobustConnection, exchange: str,
                          limit: float) -> AsyncIterator[RabbitTransaction]:
        from aiormq.exceptions import AMQPError

        try:
            async with asyncio.timeout(limit):
                channel = await self._acquire(connection)
                await channel.ready()
                raw = await channel.get_underlay_channel()
                await raw.tx_select()  # again after every reconnect: a new channel is plain
        except (AMQPError, ConnectionError, RuntimeError, TimeoutError) as exc:
            raise BrokerUnavailableError(f"cannot open a RabbitMQ transaction: {exc!r}") from exc
        tx = RabbitTransaction(raw, exchange)
        try:
            try:
                yield tx
            except BaseException:
                tx._open = False
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(limit):
                        await raw.tx_rollback()
                raise
            tx._open = False
            try:
                async with asyncio.timeout(limit):
                    await raw.tx_commit()
            except (AMQPError, ConnectionError, RuntimeError, TimeoutError) as exc:
                raise TransactionError(
                    f"RabbitMQ transaction of {tx.published} messages not committed: {exc!r}"
                ) from exc
        finally:
            self._free.put_nowait(channel)

    async def close(self) -> None:
        channels, self._all = self._all, []
        for channel in channels:
            with contextlib.suppress(Exception):
                await channel.close()
