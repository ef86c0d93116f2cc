"""The end of the chain: hands messages to the broker and records one result per message."""

from __future__ import annotations

from ...brokers.base import Broker
from ..stage import Publication

_OK_ONE: tuple[None] = (None,)


class BrokerSink:
    """One message goes through ``publish`` (cheapest), several through ``publish_many``."""

    __slots__ = ("broker",)

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    async def __call__(self, pub: Publication) -> None:
        messages = pub.messages
        if len(messages) == 1:
            await self.broker.publish(messages[0])
            pub.results = _OK_ONE
            return
        results = await self.broker.publish_many(messages)
        if len(results) != len(messages):
            raise RuntimeError(f"{self.broker.name}.publish_many returned {len(results)} "
                               f"results for {len(messages)} messages")
        pub.results = results
