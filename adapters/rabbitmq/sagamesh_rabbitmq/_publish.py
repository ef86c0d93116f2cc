"""Confirmed publishing: every publish waits for the broker's ack, retries across reconnects.

A publish whose confirm is lost with the connection is sent again once the robust connection is
back (until ``publish_timeout``), so a publish that returns is on the broker at least once; a
retried one can be there twice (consumers de-duplicate by message id).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sagamesh._eager import DeadlineQueue, finish_by
from sagamesh.errors import BrokerUnavailableError, PublishTimeoutError, SagameshError

if TYPE_CHECKING:
    from aio_pika.abc import AbstractRobustChannel
    from aiormq.abc import AbstractChannel
    from pamqp.commands import Basic

log = logging.getLogger("sagamesh_rabbitmq")


class UnroutableMessageError(SagameshError):
    """A ``mandatory`` publish was returned: no queue is bound for its topic."""


class PublishNackedError(BrokerUnavailableError):
    """RabbitMQ answered the publish with ``basic.nack`` (an internal broker error)."""


class _Tries:
    """What the tries of one publish saw, for the error its deadline raises."""

    __slots__ = ("count", "last", "phase")

    def __init__(self) -> None:
        self.count = 0
        self.last: BaseException | None = None
        self.phase = "connect"


class ConfirmingPublisher:
    """Publishes on one confirm-mode channel; owned by the broker."""

    def __init__(self, channel: AbstractRobustChannel, *, timeout: float, window: int,
                 mandatory: bool) -> None:
        self._channel = channel
        self._timeout = timeout
        self._window = window
        self._mandatory = mandatory
        # aiormq's errors, imported here (on connect) rather than by an import statement per
        # publish, which cost more than the rest of a publish's own Python work
        from aiormq.exceptions import AMQPError, DeliveryError, PublishError

        self._unroutable: type[Exception] = PublishError
        self._nacked: type[Exception] = DeliveryError
        self._lost: tuple[type[Exception], ...] = (AMQPError, ConnectionError, RuntimeError)
        self._deadlines = DeadlineQueue(timeout)
        # The robust channel's current aiormq channel, kept while it is open: asking the robust
        # channel for it (two awaits through its ready state) cost more than the publish's own
        # Python work. A reconnect closes it, and the next publish asks again.
        self._underlay: AbstractChannel | None = None
        self.closed = False
        self.retries = 0
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def _enter(self) -> None:
        self._inflight += 1
        self._idle.clear()

    def _leave(self) -> None:
        self._inflight -= 1
        if not self._inflight:
            self._idle.set()

    async def drain(self, limit: float) -> bool:
        """Wait (at most ``limit`` s) until every publish that started has finished."""
        try:
            async with asyncio.timeout(limit):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def publish(self, exchange: str, routing_key: str, body: bytes,
                      props: Basic.Properties, *, mandatory: bool | None = None) -> None:
        """Return once RabbitMQ confirmed; raise a sagamesh error otherwise.

        Every try shares one deadline, ``timeout`` after the call; deadlines of one length
        share one loop timer (:class:`~sagamesh._eager.DeadlineQueue`) instead of an
        ``asyncio.timeout`` per publish."""
        self._enter()
        tries = _Tries()
        try:
            expired = await finish_by(
                self._tries(exchange, routing_key, body, props,
                            self._mandatory if mandatory is None else mandatory, tries),
                self._deadlines)
        finally:
            self._leave()
        if not expired:
            return
        last = tries.last
        if isinstance(last, PublishNackedError):
            raise last
        if tries.phase == "connect":
            raise BrokerUnavailableError(
                f"RabbitMQ unreachable for {self._timeout:.1f}s; message "
                f"{props.message_id} not published"
            ) from last
        raise PublishTimeoutError(
            f"RabbitMQ did not confirm message {props.message_id} within {self._timeout:.1f}s"
        ) from last

    async def _tries(self, exchange: str, routing_key: str, body: bytes,
                     props: Basic.Properties, mandatory: bool, tries: _Tries) -> None:
        """Publish until confirmed, across reconnects; the caller's deadline ends it."""
        while True:
            if self.closed:
                raise BrokerUnavailableError("the RabbitMQ broker is closed") from tries.last
            tries.phase = "connect"
            try:
                channel = self._underlay
                if channel is None or channel.is_closed:  # first publish, or reconnected
                    await self._channel.ready()
                    channel = self._underlay = await self._channel.get_underlay_channel()
                tries.phase = "confirm"
                await channel.basic_publish(
                    body, exchange=exchange, routing_key=routing_key,
                    properties=props, mandatory=mandatory,
                )
                return
            except self._unroutable as exc:
                raise UnroutableMessageError(
                    f"no queue is bound for topic {routing_key!r} on exchange {exchange!r} "
                    f"(message {props.message_id})"
                ) from exc
            except self._nacked as exc:
                tries.last = PublishNackedError(f"RabbitMQ nacked message {props.message_id}")
                tries.last.__cause__ = exc
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # our caller cancelled us, or the deadline did
                tries.last = exc  # the channel closed under a pending confirm
            except self._lost as exc:
                tries.last = exc  # connection or channel lost; the robust connection restores it
            # A failed try asks the robust channel again (through its ready state), even if
            # the kept channel does not know yet that it is gone.
            self._underlay = None
            tries.count += 1
            self.retries += 1
            log.debug("publish of %s failed (%r); retry %d", props.message_id, tries.last,
                      tries.count)
            await asyncio.sleep(min(0.02 * 2 ** min(tries.count, 6), 1.0))

    async def publish_many(
        self, exchange: str, items: Sequence[tuple[str, bytes, Basic.Properties]]
    ) -> list[Exception | None]:
        """Publish all, at most ``window`` unconfirmed at a time; one result per item."""
        results: list[Exception | None] = [None] * len(items)
        if not items:
            return results
        self._enter()  # counted before the first await, so close() waits for the whole batch
        try:
            await self._publish_many(exchange, items, results)
        finally:
            self._leave()
        return results

    async def _publish_many(self, exchange: str,
                            items: Sequence[tuple[str, bytes, Basic.Properties]],
                            results: list[Exception | None]) -> None:
        window = asyncio.Semaphore(self._window)
        loop = asyncio.get_running_loop()

        async def one(index: int, routing_key: str, body: bytes,
                      props: Basic.Properties) -> None:
            try:
                await self.publish(exchange, routing_key, body, props)
            except Exception as exc:
                results[index] = exc
            finally:
                window.release()

        tasks: list[asyncio.Task[None]] = []
        try:
            for index, (routing_key, body, props) in enumerate(items):
                await window.acquire()
                tasks.append(loop.create_task(one(index, routing_key, body, props)))
            await asyncio.gather(*tasks)
        finally:
            pending = [task for task in tasks if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
