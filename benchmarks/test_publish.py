"""Publish throughput on the embedded memory broker (events/s), single and batch.

Run: .venv/bin/pytest benchmarks/test_publish.py --benchmark-enable -q
Each round publishes a fixed number of events so the event-loop entry cost is amortised;
events/s is printed and stored in the benchmark's extra_info.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from sagamesh.brokers.memory import MemoryBroker
from sagamesh.events import EventType, SagaEvent
from sagamesh.publishing import PublisherConfig, ReliabilityConfig, SagaEventPublisher

SINGLES_PER_ROUND = 1_000
BATCH_SIZE = 1_000


def _events(n: int) -> list[SagaEvent]:
    return [
        SagaEvent(saga_id=f"order-{i % 50}", type=EventType.SAGA_STEP_COMPLETED,
                  step_id="reserve-inventory", correlation_id="corr-1", source="orders",
                  service="order-service", service_version="1.4.2",
                  data={"order_id": f"o-{i}", "amount": 129.5, "items": [1, 2, 3]},
                  metadata={"tenant": "acme"})
        for i in range(n)
    ]


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(params=["basic", "reliability"])
def publisher(request: pytest.FixtureRequest,
              loop: asyncio.AbstractEventLoop) -> Iterator[SagaEventPublisher]:
    broker = MemoryBroker(retention=1_000)
    loop.run_until_complete(broker.connect())
    config = PublisherConfig() if request.param == "basic" else PublisherConfig(
        reliability=ReliabilityConfig())
    pub = SagaEventPublisher(broker, config)
    yield pub
    loop.run_until_complete(pub.close())
    loop.run_until_complete(broker.close())


def _report(benchmark: object, events: int, label: str) -> None:
    """events/s from the mean round and from the best round (the best is the steadier figure
    on a shared machine: other processes only ever make a round slower)."""
    stats = benchmark.stats.stats  # type: ignore[attr-defined]
    mean_rate, best_rate = events / stats.mean, events / stats.min
    benchmark.extra_info["events_per_s"] = round(mean_rate)  # type: ignore[attr-defined]
    benchmark.extra_info["events_per_s_best"] = round(best_rate)  # type: ignore[attr-defined]
    print(f"\n{label}: {mean_rate:,.0f} events/s mean, {best_rate:,.0f} best "
          f"({stats.min * 1e6 / events:.2f} µs/event)")


def test_single_publish(benchmark: object, publisher: SagaEventPublisher,
                        loop: asyncio.AbstractEventLoop) -> None:
    events = _events(SINGLES_PER_ROUND)

    async def run() -> None:
        publish = publisher.publish_saga_event
        for event in events:
            await publish(event)

    benchmark(lambda: loop.run_until_complete(run()))  # type: ignore[operator]
    _report(benchmark, SINGLES_PER_ROUND, "single publish")


def test_batch_publish(benchmark: object, publisher: SagaEventPublisher,
                       loop: asyncio.AbstractEventLoop) -> None:
    events = _events(BATCH_SIZE)
    benchmark(lambda: loop.run_until_complete(publisher.publish_batch(events)))  # type: ignore[operator]
    _report(benchmark, BATCH_SIZE, f"batch publish ({BATCH_SIZE})")
