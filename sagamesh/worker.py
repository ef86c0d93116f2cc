"""A sagamesh process built from settings: broker, publisher, saga storage and coordinator,
event consumer, tracing and ``/metrics`` — what ``sagamesh worker --config FILE APP`` runs.

``APP`` is ``"module:attr"`` naming an :class:`EventRouter`, a :class:`SagaDefinition`, a list
of those, a :class:`WorkerApp`, or a function returning one of them. The same app runs on every
broker: only the settings file changes.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import factories
from .errors import ConfigError

if TYPE_CHECKING:
    from .brokers.base import Broker
    from .consuming import EventConsumer, EventRouter
    from .observability.metrics import Metrics
    from .observability.tracing import Tracing
    from .publishing import SagaEventPublisher
    from .saga import SagaCoordinator, SagaDefinition, StateStorage
    from .settings import Settings

log = logging.getLogger(__name__)


@dataclass
class WorkerApp:
    """What a worker runs: handlers (a router) and/or saga definitions."""

    router: EventRouter | None = None
    definitions: Sequence[SagaDefinition] = field(default_factory=tuple)


def as_worker_app(target: Any, *, spec: str = "") -> WorkerApp:
    """Normalise an app object (router, definition, list, WorkerApp, factory) to WorkerApp."""
    from .consuming import EventRouter
    from .saga import SagaDefinition

    if isinstance(target, WorkerApp):
        return target
    if isinstance(target, EventRouter):
        return WorkerApp(router=target)
    if isinstance(target, SagaDefinition):
        return WorkerApp(definitions=(target,))
    if isinstance(target, (list, tuple)):
        app = WorkerApp()
        definitions: list[SagaDefinition] = []
        for item in target:
            part = as_worker_app(item, spec=spec)
            if part.router is not None:
                if app.router is not None:
                    raise ConfigError(f"{spec or 'the app'} holds more than one EventRouter; "
                                      "register every handler on one router", field="APP")
                app.router = part.router
            definitions.extend(part.definitions)
        app.definitions = tuple(definitions)
        return app
    if callable(target) and not isinstance(target, type):
        return as_worker_app(target(), spec=spec)
    raise ConfigError(
        f"{spec or 'the app'} is a {type(target).__name__}; expected an EventRouter, a "
        "SagaDefinition, a list of them, a WorkerApp or a function returning one", field="APP")


def load_app(spec: str) -> WorkerApp:
    """Import ``"module:attr"`` (the current directory is importable, as with uvicorn)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"APP must look like 'module:attribute', got {spec!r}", field="APP")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import module {module_name!r}: {exc}", field="APP") from exc
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(f"module {module_name!r} has no attribute {attr!r}",
                              field="APP") from None
    return as_worker_app(target, spec=spec)


class Worker:
    """Owns everything a sagamesh process runs and starts/stops it in order.

    Start: tracing/metrics → broker (connect, or :class:`BrokerUnavailableError`) → publisher
    → storage → coordinator (recovers unfinished sagas) → consumer → ``/metrics``.
    Stop (reverse): the consumer drains in-flight work, the coordinator lets running sagas
    finish within ``saga.shutdown_timeout``, the publisher flushes, then storage and broker
    close. Everything it started is closed even when a later step fails.
    """

    def __init__(self, settings: Settings, app: WorkerApp | None = None, *,
                 source: str | None = None, tracing: Tracing | None = None,
                 metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.app = app or WorkerApp()
        self.source = source
        self.tracing = tracing if tracing is not None else factories.create_tracing(settings)
        self.metrics = metrics if metrics is not None else factories.create_metrics(settings)
        self.broker: Broker | None = None
        self.publisher: SagaEventPublisher | None = None
        self.storage: StateStorage | None = None
        self.coordinator: SagaCoordinator | None = None
        self.consumer: EventConsumer | None = None
        self.metrics_server: Any = None
        self._started = False

    @property
    def metrics_url(self) -> str | None:
        server = self.metrics_server
        if server is None:
            return None
        host, port = server.server_address[:2]
        return f"http://{host}:{port}/metrics"

    async def start(self) -> Worker:
        if self._started:
            return self
        self._started = True
        settings = self.settings
        try:
            broker = factories.create_broker(settings)
            self.broker = await factories.connect_broker(broker, settings, source=self.source)
            if settings.broker.type == "rabbitmq":
                await ensure_dlq_queue(broker, settings)
            self.publisher = factories.create_publisher(broker, settings, tracing=self.tracing,
                                                        metrics=self.metrics)
            self.storage = factories.create_storage(settings)
            self.coordinator = factories.create_coordinator(
                settings, self.storage, self.publisher, definitions=self.app.definitions,
                tracing=self.tracing, metrics=self.metrics)
            await self.coordinator.start()
            if self.app.router is not None:
                self.consumer = factories.create_consumer(
                    broker, self.app.router, settings, tracing=self.tracing,
                    metrics=self.metrics)
                await self.consumer.start()
            if self.metrics is not None:
                m = settings.metrics
                self.metrics_server = self.metrics.serve(m.host, m.port)
        except BaseException:
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
        """Stop everything started, in reverse order; idempotent."""
        if not self._started:
            return
        self._started = False
        steps: list[tuple[str, Any]] = [
            ("consumer", self.consumer and self.consumer.stop),
            ("coordinator", self.coordinator and self.coordinator.close),
            ("publisher", self.publisher and self.publisher.close),
            ("storage", self.storage and self.storage.close),
            ("broker", self.broker and self.broker.close),
        ]
        for name, close in steps:
            if close is None:
                continue
            try:
                await close()
            except Exception:
                log.exception("closing the %s failed; continuing shutdown", name)
        server, self.metrics_server = self.metrics_server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    async def __aenter__(self) -> Worker:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run(self, stop: asyncio.Event) -> None:
        """Start, wait for ``stop`` (set it from a SIGTERM handler), then stop gracefully."""
        async with self:
            await stop.wait()


async def ensure_dlq_queue(broker: Broker, settings: Settings) -> None:
    """Make the DLQ group's queue exist before anything is dead-lettered.

    RabbitMQ drops a message that no queue is bound for, so the queue of ``dlq.group`` on
    ``dlq.topic`` is declared (by subscribing once) before the consumer or publisher can write
    a dead letter. Whatever the short subscription receives is handed back unsettled.
    """
    release = asyncio.Event()

    async def hold(delivery: Any) -> None:
        await release.wait()
        if not delivery.settled:
            await delivery.nack()

    subscription = await broker.subscribe(settings.dlq.topic, hold, group=settings.dlq.group,
                                          max_in_flight=1)
    closing = asyncio.ensure_future(subscription.close())
    await asyncio.wait({closing}, timeout=0.2)  # stop receiving first, then hand back
    release.set()
    await closing


def describe(worker: Worker) -> Iterable[tuple[str, str]]:
    """(what, detail) lines for the CLI's start-up banner."""
    s = worker.settings
    yield "broker", f"{s.broker.type} {s.broker.display_url()}"
    yield "storage", s.storage.type + (f" {s.storage.display_url()}" if s.storage.url else "")
    if worker.app.definitions:
        yield "sagas", ", ".join(d.id for d in worker.app.definitions)
    if worker.consumer is not None:
        yield "consuming", f"{', '.join(worker.consumer.topics)} as group {s.consumer.group}"
        yield "handlers", ", ".join(h.handler_id for h in worker.consumer.router.handlers)
    yield "tracing", "on" if worker.tracing is not None else "off"
    if worker.metrics_url:
        yield "metrics", worker.metrics_url


__all__ = ["Worker", "WorkerApp", "as_worker_app", "describe", "load_app"]
