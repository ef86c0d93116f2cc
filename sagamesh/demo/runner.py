"""Runs the order saga many times against a broker and reports what happened."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..events import SagaEvent
from ..saga.config import ConcurrencyConfig
from ..saga.coordinator import SagaCoordinator
from ..saga.publisher import InMemoryEventPublisher, SagaEventSink
from ..saga.state import SagaInstance
from ..saga.storage.memory import MemoryStateStorage
from .order import Services, order_saga, sample_order


@dataclass
class DemoReport:
    count: int
    outcomes: Counter[str] = field(default_factory=Counter)
    durations: list[float] = field(default_factory=list)  # seconds, per saga
    elapsed: float = 0.0
    events_published: int = 0
    events_consumed: int | None = None  # None when no consumer ran
    event_types: Counter[str] = field(default_factory=Counter)
    broker: str = ""
    publisher: str = ""
    step_retries: int = 0

    def percentile(self, p: float) -> float:
        if not self.durations:
            return 0.0
        ordered = sorted(self.durations)
        index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
        return ordered[index]

    @property
    def sagas_per_second(self) -> float:
        return self.count / self.elapsed if self.elapsed else 0.0


Progress = Callable[[SagaInstance], None]


async def run_demo(
    count: int = 1000,
    *,
    broker_url: str = "memory://",
    failure_rate: float = 0.1,
    transient_failure_rate: float = 0.05,
    concurrency: int = 200,
    latency: float = 0.0,
    seed: int | None = None,
    topic_prefix: str = "saga.events",
    group: str = "sagamesh-demo",
    on_finished: Progress | None = None,
) -> DemoReport:
    """Run ``count`` order sagas; events go through ``SagaEventPublisher`` over the broker and
    an ``EventConsumer`` counts them back (the in-memory publisher if those are unavailable)."""
    services = Services(
        payment_failure_rate=failure_rate,
        transient_failure_rate=transient_failure_rate,
        latency=latency,
        seed=seed,
    )
    report = DemoReport(count=count, broker=broker_url)
    run_id = uuid.uuid4().hex[:8]  # a shared broker may hold other runs' events: count ours
    stack = _EventStack(broker_url, report, f"demo-{run_id}-", topic_prefix, group)
    async with stack as publisher:
        coordinator = SagaCoordinator(
            MemoryStateStorage(),
            publisher,
            ConcurrencyConfig(
                max_concurrent_sagas=concurrency,
                worker_pool_size=concurrency,
                acquire_timeout=60.0,
                shutdown_timeout=30.0,
            ),
        )
        definition = order_saga(services)
        coordinator.register(definition)
        rng = random.Random(seed)
        admitted = asyncio.Semaphore(concurrency)

        async def one(index: int) -> None:
            async with admitted:
                instance = await coordinator.start_saga(
                    definition, sample_order(index, rng), saga_id=f"demo-{run_id}-{index:06d}"
                )
                final = await coordinator.wait_for_completion(instance.id, timeout=120)
            report.outcomes[final.state.value] += 1
            if final.start_time and final.end_time:
                report.durations.append((final.end_time - final.start_time).total_seconds())
            if on_finished is not None:
                on_finished(final)

        started = time.perf_counter()
        async with coordinator:
            await asyncio.gather(*(one(i) for i in range(count)))
        report.elapsed = time.perf_counter() - started
        metrics = coordinator.get_metrics()
        report.events_published = metrics.events_published
        report.step_retries = metrics.step_retries
    return report


class _EventStack:
    """Broker + SagaEventPublisher + counting EventConsumer, or the in-memory publisher."""

    def __init__(
        self, broker_url: str, report: DemoReport, saga_prefix: str, topic_prefix: str, group: str
    ) -> None:
        self.url = broker_url
        self.report = report
        self.prefix = saga_prefix
        self.topic_prefix = topic_prefix
        self.group = group
        self._broker: Any = None
        self._publisher: Any = None
        self._consumer: Any = None
        self._memory: InMemoryEventPublisher | None = None

    async def __aenter__(self) -> SagaEventSink:
        try:
            from ..brokers.registry import create_broker
            from ..consuming import ConsumerConfig, EventConsumer, EventRouter
            from ..publishing import PublisherConfig, SagaEventPublisher
        except ImportError:  # pragma: no cover - a partial install: keep the demo working
            self._memory = InMemoryEventPublisher()
            self._memory.subscribe(None, self._count)
            self.report.publisher = "InMemoryEventPublisher"
            self.report.events_consumed = 0
            return self._memory
        self._broker = create_broker(self.url)
        await self._broker.connect()
        router = EventRouter()

        @router.handler(handler_id="demo-counter", processing_timeout=None)
        async def count(event: SagaEvent, ctx: Any) -> None:
            self._count(event)

        self.report.events_consumed = 0
        self._consumer = EventConsumer(
            self._broker,
            router,
            ConsumerConfig(topic_prefix=self.topic_prefix, group=self.group, workers=8),
        )
        await self._consumer.start()
        self._publisher = SagaEventPublisher(
            self._broker, PublisherConfig(topic_prefix=self.topic_prefix)
        )
        self.report.publisher = "SagaEventPublisher"
        return self._publisher  # type: ignore[no-any-return]

    def _count(self, event: SagaEvent) -> None:
        if not event.saga_id.startswith(self.prefix):
            return
        self.report.events_consumed = (self.report.events_consumed or 0) + 1
        self.report.event_types[event.type.value] += 1

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self._publisher is not None:
                await self._publisher.close()
                if exc[0] is None:
                    await self._drain()
        finally:
            if self._consumer is not None:
                await self._consumer.stop()
            if self._broker is not None:
                await self._broker.close()

    async def _drain(self, limit: float = 30.0) -> None:
        """Let the consumer catch up with everything published (bounded)."""
        deadline = time.monotonic() + limit
        while (self.report.events_consumed or 0) < self.report.events_published:
            if time.monotonic() > deadline:
                return
            await asyncio.sleep(0.01)


__all__ = ["DemoReport", "run_demo"]
