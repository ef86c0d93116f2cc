"""The order-processing saga used by ``sagamesh demo`` and ``examples/order_saga.py``.

create order → reserve inventory → process payment → confirm order. The fake services keep
their effects in dicts keyed by the step's idempotency key, so a step re-run (a retry, or a
recovery after a crash) returns the recorded result instead of acting twice.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field, replace

from ..errors import BusinessError
from ..retry import ExponentialBackoffRetryPolicy, NoRetryPolicy
from ..saga.compensation import SequentialCompensation
from ..saga.definition import SagaDefinition
from ..saga.step import SagaStep, StepContext


@dataclass(frozen=True)
class OrderItem:
    sku: str
    quantity: int
    price: float


@dataclass(frozen=True)
class OrderData:
    order_id: str
    customer_id: str
    items: tuple[OrderItem, ...] = ()
    status: str = "new"
    reservation_id: str | None = None
    payment_id: str | None = None

    @property
    def amount(self) -> float:
        return round(sum(i.quantity * i.price for i in self.items), 2)


@dataclass
class Services:
    """In-process stand-ins for the order, inventory and payment services.

    ``payment_failure_rate``: share of payments declined (a business error → compensation);
    ``transient_failure_rate``: share of inventory calls failing with a retryable network error;
    ``latency``: seconds each call takes (0 = just a scheduling point).
    """

    payment_failure_rate: float = 0.1
    transient_failure_rate: float = 0.0
    latency: float = 0.0
    seed: int | None = None
    orders: dict[str, str] = field(default_factory=dict)  # idempotency key -> status
    reservations: dict[str, str] = field(default_factory=dict)
    payments: dict[str, str] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    async def call(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        await asyncio.sleep(self.latency)


class CreateOrder(SagaStep):
    id = "create-order"
    name = "Create order"
    timeout = 5.0

    def __init__(self, services: Services) -> None:
        self.services = services

    async def execute(self, ctx: StepContext, data: OrderData) -> OrderData:
        await self.services.call("orders.create")
        self.services.orders.setdefault(ctx.idempotency_key, "pending")
        return replace(data, status="pending")

    async def compensate(self, ctx: StepContext, data: OrderData) -> None:
        await self.services.call("orders.cancel")
        if ctx.idempotency_key in self.services.orders:
            self.services.orders[ctx.idempotency_key] = "cancelled"


class ReserveInventory(SagaStep):
    id = "reserve-inventory"
    name = "Reserve inventory"
    timeout = 5.0
    retry_policy = ExponentialBackoffRetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.01)

    def __init__(self, services: Services) -> None:
        self.services = services

    async def execute(self, ctx: StepContext, data: OrderData) -> OrderData:
        s = self.services
        await s.call("inventory.reserve")
        if s.transient_failure_rate and s.rng.random() < s.transient_failure_rate:
            raise ConnectionError("inventory service unavailable")
        reservation = s.reservations.setdefault(ctx.idempotency_key, f"res-{data.order_id}")
        return replace(data, reservation_id=reservation)

    async def compensate(self, ctx: StepContext, data: OrderData) -> None:
        await self.services.call("inventory.release")
        self.services.reservations.pop(ctx.idempotency_key, None)


class ProcessPayment(SagaStep):
    id = "process-payment"
    name = "Process payment"
    timeout = 5.0
    retry_policy = NoRetryPolicy()

    def __init__(self, services: Services) -> None:
        self.services = services

    async def execute(self, ctx: StepContext, data: OrderData) -> OrderData:
        s = self.services
        await s.call("payments.charge")
        key = ctx.idempotency_key
        if key not in s.payments:
            if s.rng.random() < s.payment_failure_rate:
                raise BusinessError("payment_declined", f"card declined for {data.amount:.2f}")
            s.payments[key] = f"pay-{data.order_id}"
        return replace(data, payment_id=s.payments[key])

    async def compensate(self, ctx: StepContext, data: OrderData) -> None:
        await self.services.call("payments.refund")
        if self.services.payments.get(ctx.idempotency_key):
            self.services.payments[ctx.idempotency_key] = "refunded"


class ConfirmOrder(SagaStep):
    id = "confirm-order"
    name = "Confirm order"
    timeout = 5.0

    def __init__(self, services: Services) -> None:
        self.services = services

    async def execute(self, ctx: StepContext, data: OrderData) -> OrderData:
        await self.services.call("orders.confirm")
        create_key = f"{ctx.saga_id}:{CreateOrder.id}"
        self.services.orders[create_key] = "confirmed"
        return replace(data, status="confirmed")


def order_saga(services: Services, *, timeout: float = 60.0) -> SagaDefinition:
    return SagaDefinition(
        id="order-processing",
        name="Order processing",
        steps=[
            CreateOrder(services),
            ReserveInventory(services),
            ProcessPayment(services),
            ConfirmOrder(services),
        ],
        timeout=timeout,
        retry_policy=ExponentialBackoffRetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.1),
        compensation=SequentialCompensation(timeout=5.0),
        data_type=OrderData,
    )


def sample_order(index: int, rng: random.Random) -> OrderData:
    items = tuple(
        OrderItem(f"sku-{rng.randrange(1000):03d}", rng.randint(1, 3), round(rng.uniform(2, 80), 2))
        for _ in range(rng.randint(1, 3))
    )
    return OrderData(order_id=f"order-{index:06d}", customer_id=f"cust-{rng.randrange(500)}",
                     items=items)
