"""One active member per ordered consumer group, through a lease in a JetStream KV bucket.

JetStream hands a group's messages to whichever member pulls, so two members would handle two
messages of one key at once. An ordered subscription therefore pulls only while it holds the
group's lease (a KV entry created only if absent, refreshed every ``ttl / 3`` and expiring after
``ttl``): the others stand by and take over when the holder closes (it deletes the entry) or
stops refreshing (crash, partition).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

    from .broker import NatsBroker

log = logging.getLogger("sagamesh_nats")


class GroupLease:
    def __init__(self, broker: NatsBroker, key: str, ttl: float,
                 on_change: Callable[[bool], None]) -> None:
        self._broker = broker
        self.key = key
        self.ttl = ttl
        self._on_change = on_change
        self._member = uuid.uuid4().hex.encode()
        self._revision = 0
        self._refreshed = 0.0  # loop time of the last successful create/refresh
        self.held = False

    def _set(self, held: bool) -> None:
        if held != self.held:
            self.held = held
            log.info("NATS: %s the ordered-group lease %s", "took" if held else "lost", self.key)
            self._on_change(held)

    async def _kv(self) -> KeyValue:
        return await self._broker._lease_bucket(self.ttl)

    async def try_acquire(self) -> bool:
        from nats.js.errors import KeyWrongLastSequenceError

        kv = await self._kv()
        try:
            self._revision = await kv.create(self.key, self._member)
        except KeyWrongLastSequenceError:
            return False
        self._refreshed = asyncio.get_running_loop().time()
        self._set(True)
        return True

    async def _refresh(self) -> None:
        from nats.js.errors import KeyWrongLastSequenceError

        kv = await self._kv()
        try:
            self._revision = await kv.update(self.key, self._member, last=self._revision)
            self._refreshed = asyncio.get_running_loop().time()
        except KeyWrongLastSequenceError:
            # Expired (we stalled) or taken by another member: take it again if it is free.
            self._set(False)
            await self.try_acquire()

    async def run(self) -> None:
        """Refresh while held, try to take it while not; never raises (owned task)."""
        loop = asyncio.get_running_loop()
        while True:
            self.ttl = min(self.ttl, self._broker.lease_ttl)  # the bucket may expire sooner
            await asyncio.sleep(self.ttl / 3)
            try:
                if self.held:
                    await self._refresh()
                else:
                    await self.try_acquire()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # server away: the lease may lapse meanwhile
                log.debug("NATS: lease %s not renewed (%s)", self.key, exc)
                if self.held and loop.time() - self._refreshed > self.ttl:
                    self._set(False)

    async def release(self) -> None:
        if self.held:
            self.held = False
            with contextlib.suppress(Exception):
                kv = await self._kv()
                await kv.delete(self.key, last=self._revision)
