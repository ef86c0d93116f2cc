"""Deterministic sample events for tests and benchmarks (same bytes on every run).

* :func:`small_event` - the bare minimum a saga emits (about 130 bytes as JSON);
* :func:`typical_event` - a completed step of an order saga (about 530 bytes as JSON), the
  reference event of the serializer and throughput benchmarks;
* :func:`large_event` - an order with a hundred line items (about 10 KB of data).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ..events import EventType, SagaEvent

_TIMESTAMP = datetime(2024, 5, 1, 10, 20, 30, 123456, tzinfo=UTC)
_SAGA_ID = "order-saga-2024-000123"


def small_event() -> SagaEvent:
    return SagaEvent(
        id="5b0e7f4c-2f7e-4d8a-9a57-1d3c2b9e0a11",
        saga_id=_SAGA_ID,
        type=EventType.SAGA_STARTED,
        timestamp=_TIMESTAMP,
    )


def typical_event() -> SagaEvent:
    return SagaEvent(
        id="8f14e45f-ceea-4672-9a6b-2c3d4e5f6a7b",
        saga_id=_SAGA_ID,
        step_id="reserve-inventory",
        type=EventType.SAGA_STEP_COMPLETED,
        timestamp=_TIMESTAMP,
        correlation_id="req-7f3a2c91",
        data={
            "order_id": "ORD-2024-000123",
            "items": [{"sku": "SKU-1001", "qty": 2}, {"sku": "SKU-2002", "qty": 1}],
        },
        duration=timedelta(milliseconds=42, microseconds=317),
        attempt=1,
        max_attempts=3,
        metadata={"tenant": "acme"},
        source="order-service",
        service="inventory-service",
        service_version="1.4.2",
        trace_id="4bf92f3577b34da6a3ce929e0e4736f1",
        span_id="00f067aa0ba902b7",
    )


def large_event() -> SagaEvent:
    items: list[dict[str, Any]] = [
        {
            "sku": f"SKU-{1000 + i:05d}",
            "name": f"Catalogue item number {i}",
            "quantity": 1 + i % 4,
            "unit_price": round(4.99 + i * 1.25, 2),
            "warehouse": f"WH-{i % 7}",
        }
        for i in range(100)
    ]
    return SagaEvent(
        id="c9f0f895-fb98-4b91-8f4d-0a1b2c3d4e5f",
        saga_id=_SAGA_ID,
        step_id="reserve-inventory",
        type=EventType.SAGA_STEP_COMPLETED,
        timestamp=_TIMESTAMP,
        correlation_id="req-7f3a2c91",
        data={"order_id": "ORD-2024-000123", "customer_id": "CUST-88812", "items": items},
        new_state={"status": "reserved", "reserved_items": len(items)},
        duration=timedelta(milliseconds=180),
        attempt=1,
        max_attempts=3,
        metadata={"tenant": "acme", "priority": 5},
        source="order-service",
        service="inventory-service",
        service_version="1.4.2",
        trace_id="4bf92f3577b34da6a3ce929e0e4736f1",
        span_id="00f067aa0ba902b7",
        parent_span_id="b7ad6b7169203331",
    )


SAMPLES = {"small": small_event, "typical": typical_event, "large": large_event}
