"""What ``sagamesh worker`` runs: saga definitions and event handlers, no wiring.

    sagamesh worker --config configs/nats.yaml examples.worker_app:app

The worker builds broker, publisher, storage, coordinator and consumer from the settings file,
recovers unfinished sagas, serves ``/metrics`` when ``metrics.enabled``, and on SIGTERM drains
in-flight work before it exits. The same file runs on memory, NATS, RabbitMQ or Kafka.
"""

from __future__ import annotations

import logging

from sagamesh.consuming import EventRouter, HandlerContext
from sagamesh.demo.order import Services, order_saga
from sagamesh.events import EventType, SagaEvent
from sagamesh.worker import WorkerApp

log = logging.getLogger("orders")
router = EventRouter()


@router.handler(EventType.SAGA_COMPLETED, EventType.SAGA_FAILED, handler_id="order-outcomes")
async def order_outcome(event: SagaEvent, ctx: HandlerContext) -> None:
    log.info("order saga %s ended: %s", event.saga_id, event.type.value)


app = WorkerApp(router=router, definitions=[order_saga(Services(payment_failure_rate=0.1))])
