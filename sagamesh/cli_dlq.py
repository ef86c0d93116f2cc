"""``sagamesh dlq list|show|replay|purge``: the configured broker's dead-letter queue.

The commands read the DLQ through a :class:`DeadLetterQueueHandler` whose subscription HOLDS
every dead letter unsettled instead of acknowledging it: looking never consumes anything.
Only an entry the handler deletes — replayed (after the republish was confirmed) or purged —
is acknowledged; everything else goes back to the broker when the command exits.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from .cli_common import CONFIG_OPTION, EXIT_FAILED, console, fail, load_settings, run, source_of
from .consuming.dlq_store import DeadLetterEntry, MemoryDLQStore

if TYPE_CHECKING:
    from .brokers.base import Broker, Delivery, Subscription
    from .consuming import DeadLetterQueueHandler
    from .settings import Settings

dlq_app = typer.Typer(name="dlq", help="Inspect, replay and purge the dead-letter queue.",
                      no_args_is_help=True)

WAIT_OPTION = typer.Option(1.0, "--wait", min=0.05,
                           help="Seconds without a new arrival after which the DLQ counts as "
                                "fully read.")


class HeldStore(MemoryDLQStore):
    """A DLQ store that keeps each entry's broker delivery unsettled until the entry is
    deleted (then it is acked); :meth:`release` hands the rest back (nack)."""

    def __init__(self) -> None:
        super().__init__()
        self._held: dict[str, list[asyncio.Future[bool]]] = {}

    def hold(self, message_id: str) -> asyncio.Future[bool]:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._held.setdefault(message_id, []).append(future)
        return future

    async def delete(self, message_id: str, *, version: int | None = None) -> bool:
        deleted = await super().delete(message_id, version=version)
        if deleted:
            for future in self._held.pop(message_id, []):
                if not future.done():
                    future.set_result(True)  # ack
        return deleted

    def release(self) -> None:
        for futures in self._held.values():
            for future in futures:
                if not future.done():
                    future.set_result(False)  # nack: back to the broker
        self._held.clear()


class DLQSession:
    """Connect, read the whole DLQ (held), act, then hand back what was not acted on."""

    def __init__(self, settings: Settings, *, source: str, wait: float = 1.0,
                 max_wait: float = 60.0) -> None:
        self.settings = settings
        self.source = source
        self.wait = wait
        self.max_wait = max_wait
        self.store = HeldStore()
        self.broker: Broker | None = None
        self.handler: DeadLetterQueueHandler | None = None
        self._subscription: Subscription | None = None
        self._last_arrival = 0.0

    async def __aenter__(self) -> DeadLetterQueueHandler:
        from . import factories

        settings = self.settings
        broker = factories.create_broker(settings)
        self.broker = await factories.connect_broker(broker, settings, source=self.source)
        self.handler = factories.create_dlq_handler(broker, settings, store=self.store)
        try:
            self._subscription = await broker.subscribe(
                settings.dlq.topic, self._on_delivery, group=settings.dlq.group,
                max_in_flight=10_000)
            self._last_arrival = time.monotonic()
            deadline = time.monotonic() + self.max_wait
            while time.monotonic() < deadline:
                idle = time.monotonic() - self._last_arrival
                if idle >= self.wait:
                    break
                await asyncio.sleep(min(0.05, self.wait - idle + 0.001))
        except BaseException:
            await self._close()
            raise
        return self.handler

    async def _on_delivery(self, delivery: Delivery) -> None:
        # Hold the delivery: returning would ack it. Settle once the entry is deleted
        # (ack) or the session ends (nack).
        self._last_arrival = time.monotonic()
        assert self.handler is not None
        held = self.store.hold(delivery.message.id)
        await self.handler.add(delivery.message)
        self._last_arrival = time.monotonic()
        if await held:
            await delivery.ack()
        elif not delivery.settled:
            await delivery.nack()

    async def __aexit__(self, *exc: object) -> None:
        await self._close()

    async def _close(self) -> None:
        # Close the subscription while the held deliveries are still unsettled: the adapter
        # first stops receiving, then hands them back (an early nack could be redelivered into
        # a pull request that is about to vanish and sit out the broker's ack timeout).
        # Adapters that wait for running handlers first get them nacked after a moment.
        sub, self._subscription = self._subscription, None
        if sub is not None:
            closing = asyncio.ensure_future(sub.close())
            done, _ = await asyncio.wait({closing}, timeout=0.2)
            if not done:
                self.store.release()
            await closing
        self.store.release()
        if self.broker is not None:
            await self.broker.close()


def _entry_row(entry: DeadLetterEntry) -> dict[str, Any]:
    headers = entry.message.headers
    return {"id": entry.id, "saga_id": headers.get("sagamesh-saga-id", entry.message.key),
            "event_type": headers.get("sagamesh-event-type", ""),
            "original_topic": entry.original_topic, "attempts": entry.attempts,
            "recoveries": entry.recoveries, "handler": entry.handler_id or "",
            "first_failure": entry.first_failure, "reason": entry.reason}


def _first_failure(entry: DeadLetterEntry) -> float:
    """Epoch seconds of the first dead-lettering (the header), else when it was read."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(entry.first_failure).timestamp()
    except ValueError:
        return entry.received_at


@dlq_app.command("list")
def dlq_list(
    config: Path | None = CONFIG_OPTION,
    wait: float = WAIT_OPTION,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """List the dead letters (id, saga, event type, original topic, attempts, reason)."""
    settings = load_settings(config)

    async def go() -> list[DeadLetterEntry]:
        async with DLQSession(settings, source=source_of(config), wait=wait) as dlq:
            return await dlq.list()

    entries = run(go())
    out = console()
    if as_json:
        for entry in entries:
            typer.echo(json.dumps(_entry_row(entry), default=str))
        return
    from rich.table import Table

    table = Table(title=f"DLQ {settings.dlq.topic} ({len(entries)} message(s))")
    for column in ("id", "saga", "type", "original topic", "attempts", "reason"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        row = _entry_row(entry)
        table.add_row(row["id"], str(row["saga_id"] or ""), row["event_type"],
                      row["original_topic"], str(row["attempts"]), row["reason"][:80])
    out.print(table)


@dlq_app.command("show")
def dlq_show(
    message_id: str = typer.Argument(..., help="The dead letter's message id."),
    config: Path | None = CONFIG_OPTION,
    wait: float = WAIT_OPTION,
) -> None:
    """Show one dead letter: its DLQ headers, all headers and the decoded event."""
    settings = load_settings(config)

    async def go() -> DeadLetterEntry | None:
        from .errors import DeadLetterNotFoundError

        async with DLQSession(settings, source=source_of(config), wait=wait) as dlq:
            try:
                return await dlq.get(message_id)
            except DeadLetterNotFoundError:
                return None

    entry = run(go())
    if entry is None:
        fail(f"no dead letter with id {message_id!r} in {settings.dlq.topic}",
             hint="`sagamesh dlq list` shows the ids")
    out = console()
    out.print_json(json.dumps({**_entry_row(entry), "headers": entry.message.headers,
                               "event": _decoded(entry)}, default=str))


def _decoded(entry: DeadLetterEntry) -> Any:
    import msgspec

    from .errors import SerializationError
    from .serialization import from_message

    try:
        return msgspec.to_builtins(from_message(entry.message))
    except SerializationError as exc:
        return {"undecodable": str(exc), "body_bytes": len(entry.message.body)}


@dlq_app.command("replay")
def dlq_replay(
    message_ids: list[str] = typer.Argument(None, help="Message id(s) to replay."),
    all_: bool = typer.Option(False, "--all", help="Replay every dead letter."),
    config: Path | None = CONFIG_OPTION,
    wait: float = WAIT_OPTION,
) -> None:
    """Republish dead letters to their original topic (removed from the DLQ only once the
    broker confirmed the republish)."""
    if not message_ids and not all_:
        fail("give message id(s) or --all", 2)
    settings = load_settings(config)

    async def go() -> tuple[list[tuple[str, str]], list[str]]:
        from .errors import DeadLetterNotFoundError

        done: list[tuple[str, str]] = []
        missing: list[str] = []
        async with DLQSession(settings, source=source_of(config), wait=wait) as dlq:
            ids = [e.id for e in await dlq.list()] if all_ else list(message_ids)
            for mid in ids:
                try:
                    result = await dlq.recover(mid)
                except DeadLetterNotFoundError:
                    missing.append(mid)
                    continue
                done.append((mid, result.target))
        return done, missing

    done, missing = run(go())
    out = console()
    for mid, target in done:
        out.print(f"[green]replayed[/green] {mid} → {target}")
    out.print(f"{len(done)} replayed")
    if missing:
        fail(f"not in the DLQ: {', '.join(missing)}", EXIT_FAILED)


@dlq_app.command("purge")
def dlq_purge(
    config: Path | None = CONFIG_OPTION,
    older_than: float | None = typer.Option(None, "--older-than", min=0,
                                            help="Only dead letters first dead-lettered more "
                                                 "than this many seconds ago."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    wait: float = WAIT_OPTION,
) -> None:
    """Delete dead letters for good (all of them, or --older-than SECONDS)."""
    settings = load_settings(config)
    if not yes and not typer.confirm(f"Delete dead letters from {settings.dlq.topic}?"):
        fail("aborted", EXIT_FAILED)

    async def go() -> int:
        async with DLQSession(settings, source=source_of(config), wait=wait) as dlq:
            if older_than is None:
                return await dlq.purge()
            cutoff = time.time() - older_than
            count = 0
            for entry in await dlq.list():
                if _first_failure(entry) < cutoff and \
                        await dlq.store.delete(entry.id, version=entry.version):
                    count += 1
            return count

    count = run(go())
    console().print(f"purged {count} dead letter(s) from {settings.dlq.topic}")
