"""The contract every broker adapter fulfils (memory, NATS, RabbitMQ, Kafka, third parties)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ..message import Message


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a broker guarantees; conformance cases and the publisher choose paths by these."""

    persistent: bool = False
    ordered_by_key: bool = False
    consumer_groups: bool = True
    native_transactions: bool = False
    delayed_redelivery: bool = False
    native_dead_letter: bool = False


@dataclass(frozen=True, slots=True)
class Health:
    healthy: bool
    broker: str
    detail: str = ""
    latency: float | None = None
    extra: dict[str, object] = field(default_factory=dict)


@runtime_checkable
class Delivery(Protocol):
    """One received message, to be settled exactly once.

    A handler that returns without settling acks; one that raises without settling nacks.
    """

    message: Message
    attempt: int  # counts from 1
    partition: int | None
    offset: int | None

    @property
    def settled(self) -> bool: ...

    async def ack(self) -> None: ...

    async def nack(self, delay: float | None = None) -> None:
        """Redeliver later (after ``delay`` seconds when given)."""

    async def reject(self) -> None:
        """Give up on the message (the broker drops it or dead-letters it natively)."""


MessageHandler = Callable[[Delivery], Awaitable[None]]


class Subscription(Protocol):
    topic: str
    group: str | None

    async def close(self) -> None:
        """Stop receiving; unsettled deliveries go back to the broker. Idempotent."""


class BrokerTransaction(Protocol):
    async def publish(self, message: Message) -> None: ...


@runtime_checkable
class Broker(Protocol):
    """An asyncio message broker client.

    ``publish`` returns once the broker confirmed the message; ``publish_many`` pipelines
    confirms with a bounded number in flight and reports one result per message, in order.
    """

    name: str
    capabilities: Capabilities

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, message: Message) -> None: ...

    async def publish_many(self, messages: Sequence[Message]) -> list[Exception | None]: ...

    async def subscribe(
        self,
        topic: str,
        handler: MessageHandler,
        *,
        group: str | None = None,
        max_in_flight: int = 64,
        ordered: bool = False,
    ) -> Subscription: ...

    async def health(self) -> Health: ...

    async def __aenter__(self) -> Broker: ...

    async def __aexit__(self, *exc: object) -> None: ...


@runtime_checkable
class TransactionalBroker(Broker, Protocol):
    """A broker with native transactions (``capabilities.native_transactions``).

    Messages published in the transaction become visible together on commit (normal exit of the
    context) and never on rollback (exception).
    """

    def transaction(self) -> AbstractAsyncContextManager[BrokerTransaction]: ...
