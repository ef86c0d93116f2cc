"""On RabbitMQ a dead letter needs a bound queue: the Worker declares the DLQ group's queue at
start, so what its consumer dead-letters is there for a DLQ handler started later."""

from __future__ import annotations

import asyncio

from sagamesh import factories
from sagamesh.consuming import EventRouter, HandlerContext
from sagamesh.events import EventType, SagaEvent
from sagamesh.settings import Settings
from sagamesh.worker import Worker, WorkerApp


async def test_dead_letters_written_before_any_dlq_reader_are_kept(amqp_url: str,
                                                                   unique: str) -> None:
    settings = Settings.load({
        "broker": {"type": "rabbitmq", "url": amqp_url},
        "publisher": {"topic_prefix": f"wd.{unique}.events"},
        "consumer": {"topic_prefix": f"wd.{unique}.events", "group": f"wd-{unique}",
                     "dlq_topic": f"wd.{unique}.dlq", "retry": {"kind": "none"}},
        "dlq": {"topic": f"wd.{unique}.dlq", "group": f"ops-{unique}"},
    })
    router = EventRouter()
    failed = asyncio.Event()

    @router.handler(EventType.SAGA_FAILED, handler_id="broken")
    async def broken(event: SagaEvent, ctx: HandlerContext) -> None:
        failed.set()
        raise RuntimeError("cannot handle this")

    event = SagaEvent(saga_id="wd-1", type=EventType.SAGA_FAILED)
    async with Worker(settings, WorkerApp(router)) as worker:
        assert worker.publisher is not None and worker.consumer is not None
        await worker.publisher.publish_saga_event(event)
        await asyncio.wait_for(failed.wait(), 20)
        async with asyncio.timeout(20):
            while worker.consumer.get_metrics().dead_lettered < 1:  # noqa: ASYNC110
                await asyncio.sleep(0.02)

    broker = factories.create_broker(settings)
    await factories.connect_broker(broker, settings)
    try:
        async with factories.create_dlq_handler(broker, settings) as dlq:
            async with asyncio.timeout(20):
                while dlq.get_metrics().received < 1:  # noqa: ASYNC110 - handler counters
                    await asyncio.sleep(0.02)
            [entry] = await dlq.list()
            assert entry.id == event.id and entry.handler_id == "broken"
            assert entry.reason.startswith("retries_exhausted: RuntimeError")
    finally:
        await broker.close()
        import aio_pika
        from sagamesh_rabbitmq._topology import group_queue

        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            for topic, group in ((f"wd.{unique}.dlq", f"ops-{unique}"),
                                 (f"wd.{unique}.events", f"wd-{unique}")):
                await channel.queue_delete(group_queue("sagamesh", topic, group))
