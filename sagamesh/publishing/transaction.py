"""``publisher.transaction(tx_id)``: buffer events, publish them all at exit or none at all."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from ..errors import TransactionError
from ..events import SagaEvent
from ..message import Message

if TYPE_CHECKING:
    from .publisher import SagaEventPublisher


class PublisherTransaction:
    """An open transaction. Events are validated and serialized when added (bad input fails
    at the call), and published in the order added when the ``async with`` block exits
    normally; an exception in the block (or :meth:`rollback`) discards them all."""

    __slots__ = ("_events", "_messages", "_publisher", "state", "tx_id")

    def __init__(self, publisher: SagaEventPublisher, tx_id: str) -> None:
        self._publisher = publisher
        self.tx_id = tx_id
        self._events: list[SagaEvent] = []
        self._messages: list[Message] = []
        self.state = "new"  # new -> open -> committed | rolled_back | failed

    @property
    def events(self) -> tuple[SagaEvent, ...]:
        return tuple(self._events)

    def __len__(self) -> int:
        return len(self._events)

    async def publish_event(self, event: SagaEvent) -> None:
        if self.state != "open":
            raise TransactionError(f"transaction {self.tx_id!r} is {self.state}; "
                                   "events can be added only inside its `async with` block")
        message = self._publisher._encode(event)
        self._events.append(event)
        self._messages.append(message)

    async def rollback(self) -> None:
        """Discard everything added; the block's exit then publishes nothing."""
        if self.state == "open":
            self._events.clear()
            self._messages.clear()
            self.state = "rolled_back"

    async def __aenter__(self) -> PublisherTransaction:
        if self.state != "new":
            raise TransactionError(f"transaction {self.tx_id!r} cannot be entered twice")
        self._publisher._begin_transaction(self.tx_id)
        self.state = "open"
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if exc_type is None and self.state == "open":
                try:
                    await self._publisher._commit(self.tx_id, self._events, self._messages)
                except BaseException:
                    self.state = "failed"
                    raise
                self.state = "committed"
            elif self.state == "open":
                self.state = "rolled_back"
                self._events.clear()
                self._messages.clear()
        finally:
            self._publisher._end_transaction(self.tx_id)
