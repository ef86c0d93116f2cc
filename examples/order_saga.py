"""Order processing as a saga: create order → reserve inventory → process payment → confirm.

Run it:  python examples/order_saga.py [--count N] [--failure-rate R]
         python examples/order_saga.py --config configs/nats.yaml   # any configs/*.yaml

With ``--config`` the same saga runs on the broker, storage, tracing and metrics the settings
file describes (``sagamesh.worker.Worker`` builds them), and an event consumer on that broker
counts every saga event back: swapping the file swaps the broker, the code stays the same.

The steps and the fake services live in ``sagamesh/demo/order.py`` (the same code
``sagamesh demo`` runs); every service call dedupes on ``ctx.idempotency_key``, so a retried or
recovered step never acts twice. A declined payment (a ``BusinessError``) compensates the steps
that completed, in reverse: the inventory reservation is released, then the order cancelled.
"""

from __future__ import annotations

import argparse
import asyncio
import random
from collections import Counter

from sagamesh.demo.order import Services, order_saga, sample_order
from sagamesh.events import EventType, SagaEvent
from sagamesh.saga import (
    ConcurrencyConfig,
    InMemoryEventPublisher,
    MemoryStateStorage,
    SagaCoordinator,
)


async def main(count: int, failure_rate: float, seed: int) -> Counter[str]:
    services = Services(payment_failure_rate=failure_rate, seed=seed)
    publisher = InMemoryEventPublisher()
    declined: list[str] = []

    def on_failed(event: SagaEvent) -> None:
        if event.error is not None:
            declined.append(f"{event.saga_id}: {event.error.code} ({event.error.message})")

    publisher.subscribe(EventType.SAGA_FAILED, on_failed)
    coordinator = SagaCoordinator(
        storage=MemoryStateStorage(),
        publisher=publisher,
        concurrency=ConcurrencyConfig(max_concurrent_sagas=100, worker_pool_size=20),
    )
    definition = order_saga(services)
    coordinator.register(definition)
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    async with coordinator:
        for index in range(count):
            order = sample_order(index, rng)
            # an explicit saga id (the order id) makes the start idempotent
            instance = await coordinator.start_saga(definition, order, saga_id=order.order_id)
            final = await coordinator.wait_for_completion(instance.id, timeout=30)
            outcomes[final.state.value] += 1
    for line in declined[:5]:
        print("compensated", line)
    print(dict(outcomes), coordinator.get_metrics())
    print(f"payments taken: {len(services.payments)}, reservations held: "
          f"{len(services.reservations)}, orders: {dict(Counter(services.orders.values()))}")
    return outcomes


async def main_with_settings(config: str, count: int, failure_rate: float,
                             seed: int) -> tuple[Counter[str], Counter[str]]:
    """The same order sagas on whatever ``config`` describes; returns the saga outcomes and
    the saga events a consumer received back through the broker, by type."""
    import contextlib
    import json

    from sagamesh.consuming import EventRouter, HandlerContext
    from sagamesh.settings import Settings
    from sagamesh.worker import Worker, WorkerApp

    settings = Settings.from_yaml(config)
    services = Services(payment_failure_rate=failure_rate, seed=seed)
    definition = order_saga(services)
    router = EventRouter()
    received: Counter[str] = Counter()
    all_back = asyncio.Event()

    @router.handler(handler_id="order-events", processing_timeout=None)
    async def on_event(event: SagaEvent, ctx: HandlerContext) -> None:
        received[event.type.value] += 1
        if received["saga.completed"] + received["saga.failed"] >= count:
            all_back.set()

    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    async with Worker(settings, WorkerApp(router, [definition]), source=config) as worker:
        coordinator = worker.coordinator
        assert coordinator is not None
        for index in range(count):
            order = sample_order(index, rng)
            instance = await coordinator.start_saga(definition, order, saga_id=order.order_id)
            final = await coordinator.wait_for_completion(instance.id, timeout=30)
            outcomes[final.state.value] += 1
        with contextlib.suppress(TimeoutError):  # every saga's last event came back
            await asyncio.wait_for(all_back.wait(), 30)
    print(f"{settings.broker.type}: {dict(outcomes)}; events received back: {dict(received)}")
    print("RESULT " + json.dumps({"broker": settings.broker.type, "outcomes": outcomes,
                                  "received": received}))
    return outcomes, received


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--failure-rate", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--config", help="a settings file, e.g. configs/nats.yaml")
    args = parser.parse_args()
    if args.config:
        asyncio.run(main_with_settings(args.config, args.count, args.failure_rate, args.seed))
    else:
        asyncio.run(main(args.count, args.failure_rate, args.seed))
