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

from sagamesh.errors import BrokerUnavailableError, PublishTimeoutError, SagameshError

if TYPE_CHECKING:
    from aio_pika.abc import AbstractRobustChannel
    from pamqp.commands import Basic

log = logging.getLogger("sagamesh_rabbitmq")


class UnroutableMessageError(SagameshError):
    """A ``mandatory`` publish was returned: no queue is bound for its topic."""


class PublishNackedError(BrokerUnavailableError):
    """RabbitMQ answered the publish with ``basic.nack`` (an internal broker error)."""


class ConfirmingPublisher:
    """Publishes on one confirm-mode channel; owned by the broker."""

    def __init__(self, channel: AbstractRobustChannel, *, timeout: float, window: int,
                 mandatory: bool) -> None:
        self._channel = channel
        self._timeout = timeout
        self._window = window
        self._mandatory = mandatory
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
        """Return once RabbitMQ confirmed; raise a sagamesh error otherwise."""
        self._enter()
        try:
            await self._publish(exchange, routing_key, body, props, mandatory)
        finally:
            self._leave()

    async def _publish(self, exchange: str, routing_key: str, body: bytes,
                       props: Basic.Properties, mandatory: bool | None) -> None:
        from aiormq.exceptions import AMQPError, DeliveryError, PublishError

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        mandatory = self._mandatory if mandatory is None else mandatory
        last: BaseException | None = None
        tries = 0
        while True:
            if self.closed:
                raise BrokerUnavailableError("the RabbitMQ broker is closed") from last
            phase = "connect"
            try:
                async with asyncio.timeout_at(deadline):
                    await self._channel.ready()
                    channel = await self._channel.get_underlay_channel()
                    phase = "confirm"
                    await channel.basic_publish(
                        body, exchange=exchange, routing_key=routing_key,
                        properties=props, mandatory=mandatory,
                    )
                return
            except PublishError as exc:
                raise UnroutableMessageError(
                    f"no queue is bound for topic {routing_key!r} on exchange {exchange!r} "
                    f"(message {props.message_id})"
                ) from exc
            except TimeoutError as exc:
                if isinstance(last, PublishNackedError):
                    raise last from exc
                if phase == "connect":
                    raise BrokerUnavailableError(
                        f"RabbitMQ unreachable for {self._timeout:.1f}s; message "
                        f"{props.message_id} not published"
                    ) from (last or exc)
                raise PublishTimeoutError(
                    f"RabbitMQ did not confirm message {props.message_id} within "
                    f"{self._timeout:.1f}s"
                ) from (last or exc)
            except DeliveryError as exc:
                last = PublishNackedError(f"RabbitMQ nacked message {props.message_id}")
                last.__cause__ = exc
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # our caller cancelled us
                last = exc  # the channel closed under a pending confirm
            except (AMQPError, ConnectionError, RuntimeError) as exc:
                last = exc  # connection or channel lost; the robust connection restores it
            tries += 1
            self.retries += 1
            log.debug("publish of %s failed (%r); retry %d", props.message_id, last, tries)
            await asyncio.sleep(min(0.02 * 2 ** min(tries, 6), 1.0))

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
