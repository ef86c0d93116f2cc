"""Order processing as a saga: create order → reserve inventory → process payment → confirm.

Run it:  python examples/order_saga.py [--count N] [--failure-rate R]

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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--failure-rate", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    asyncio.run(main(args.count, args.failure_rate, args.seed))
