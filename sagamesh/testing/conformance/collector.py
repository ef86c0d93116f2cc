"""Record what a subscription received and await conditions on it without sleeping."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ...brokers.base import Delivery, MessageHandler
from ...message import Message

OnMessage = Callable[[Delivery], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Received:
    message: Message
    attempt: int
    member: str
    at: float  # loop time when the handler was entered


class Collector:
    """A handler factory that records every delivery and every ack it made.

    ``on_message`` may nack, reject, raise or wait; a delivery it leaves unsettled is acked by
    the collector and recorded in :attr:`acked` (in ack order).
    """

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.acked: list[Received] = []
        self._received_ids: set[str] = set()
        self._acked_ids: set[str] = set()
        self._changed: asyncio.Future[None] | None = None

    # -- recording ---------------------------------------------------------------------------

    def handler(self, member: str = "", on_message: OnMessage | None = None) -> MessageHandler:
        async def handle(delivery: Delivery) -> None:
            record = Received(delivery.message, delivery.attempt, member,
                              asyncio.get_running_loop().time())
            self.received.append(record)
            self._received_ids.add(record.message.id)
            self._notify()
            try:
                if on_message is not None:
                    await on_message(delivery)
                if not delivery.settled:
                    # Recorded first: a handler cancelled while its ack is on the wire may
                    # still have acked (the broker then never redelivers it).
                    self.acked.append(record)
                    self._acked_ids.add(record.message.id)
                    await delivery.ack()
            finally:
                self._notify()

        return handle

    def _notify(self) -> None:
        changed = self._changed
        if changed is not None:
            self._changed = None
            if not changed.done():
                changed.set_result(None)

    # -- views -------------------------------------------------------------------------------

    def received_ids(self) -> set[str]:
        return self._received_ids

    def acked_ids(self) -> set[str]:
        return self._acked_ids

    def acked_by(self, member: str) -> list[str]:
        return [r.message.id for r in self.acked if r.member == member]

    def attempts_of(self, message_id: str) -> list[int]:
        return [r.attempt for r in self.received if r.message.id == message_id]

    def summary(self) -> str:
        return (f"received {len(self.received)} deliveries ({len(self.received_ids())} distinct), "
                f"acked {len(self.acked)} ({len(self.acked_ids())} distinct)")

    # -- waiting -----------------------------------------------------------------------------

    async def wait_until(self, predicate: Callable[[], bool], what: str, within: float) -> None:
        """Return once ``predicate()`` holds; fail the test naming ``what`` after ``within`` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"timed out after {within:.0f} s waiting for {what}; "
                                     f"{self.summary()}")
            if self._changed is None or self._changed.done():
                self._changed = loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._changed), remaining)
            except TimeoutError:
                continue

    async def wait_acked(self, ids: set[str], within: float, what: str = "",
                         sent: Sequence[Message] = ()) -> None:
        """Wait until every id in ``ids`` was acked at least once. On a timeout the failure
        says which are missing, whether they were delivered at all and, given the ``sent``
        messages, their keys (whole keys missing point at ordering, scattered ids at loss)."""
        acked = self._acked_ids
        try:
            await self.wait_until(lambda: len(acked) >= len(ids) and ids <= acked,
                                  what or f"{len(ids)} messages to be acked", within)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {self.missing(ids, sent)}") from None

    def missing(self, ids: set[str], sent: Sequence[Message] = ()) -> str:
        missing = ids - self._acked_ids
        delivered = missing & self._received_ids
        keys = Counter(m.key for m in sent if m.id in missing)
        total = Counter(m.key for m in sent)
        by_key = ", ".join(f"{key}: {n} of {total[key]}" for key, n in sorted(
            keys.items(), key=lambda kv: str(kv[0]))[:20])
        return (f"{len(missing)} not acked ({len(delivered)} of them delivered, unsettled), "
                f"e.g. {sorted(missing)[:5]}" + (f"; by key: {by_key}" if by_key else ""))

    async def observe(self, predicate: Callable[[], bool], window: float) -> bool:
        """True if ``predicate()`` became true within ``window`` seconds (for negative checks)."""
        try:
            await self.wait_until(predicate, "observation", window)
        except AssertionError:
            return False
        return True
