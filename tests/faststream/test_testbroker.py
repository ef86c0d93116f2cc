"""The mount on FastStream's in-memory TestBroker (NATS, RabbitMQ, Kafka): the same routing,
filters, priorities, retries, idempotency and DLQ as EventConsumer; app lifespan; AsyncAPI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from faststream import FastStream
from faststream.specification import AsyncAPI

from sagamesh.consuming import (
    ConsumerConfig,
    EventHandlerConfig,
    EventRouter,
    FailureAction,
    HandlerContext,
    MemoryIdempotencyStore,
    MetadataFilter,
    RoutingStrategy,
    SagaEventHandler,
)
from sagamesh.events import EventType, SagaEvent
from sagamesh.faststream import mount
from sagamesh.message import Headers, Message
from sagamesh.retry import FixedDelayRetryPolicy

if TYPE_CHECKING:
    from conftest import Family

def _config(**changes: Any) -> ConsumerConfig:
    values: dict[str, Any] = {"topic_prefix": "orders.events", "group": "orders",
                              "retry": FixedDelayRetryPolicy(3, 0.001),
                              "dlq_topic": "orders.dlq"}
    values.update(changes)
    return ConsumerConfig(**values)


async def test_routing_filters_and_priority(family: Family) -> None:
    broker = family.make()
    router = EventRouter(strategy=RoutingStrategy.BY_PRIORITY)
    calls: list[tuple[str, str, int]] = []

    @router.handler(EventType.SAGA_COMPLETED, priority=10, handler_id="acme-vip",
                    filters=[MetadataFilter(tenant="acme")])
    async def vip(event: SagaEvent, ctx: HandlerContext) -> None:
        calls.append(("acme-vip", event.saga_id, ctx.attempt))

    @router.handler(EventType.SAGA_COMPLETED, handler_id="everyone")
    async def everyone(event: SagaEvent, ctx: HandlerContext) -> None:
        calls.append(("everyone", event.saga_id, ctx.attempt))

    mounted = mount(broker, router, _config())
    publish = family.publisher(broker, "orders.events")
    async with family.test_broker(broker):
        await publish(SagaEvent(saga_id="a", type=EventType.SAGA_COMPLETED,
                                metadata={"tenant": "acme"}))
        await publish(SagaEvent(saga_id="b", type=EventType.SAGA_COMPLETED,
                                metadata={"tenant": "other"}))
        await publish(SagaEvent(saga_id="c", type=EventType.SAGA_STARTED))  # nobody: acked
    # BY_PRIORITY: only the top matching priority runs; the filter keeps b from the VIP one.
    assert calls == [("acme-vip", "a", 1), ("everyone", "b", 1)]
    metrics = mounted.get_metrics()
    assert (metrics.received, metrics.acked, metrics.unrouted) == (3, 3, 1)


async def test_retries_then_dead_letter_with_headers(family: Family) -> None:
    broker = family.make()
    router = EventRouter()
    attempts: list[int] = []

    @router.handler(EventType.SAGA_FAILED, handler_id="pager")
    async def pager(event: SagaEvent, ctx: HandlerContext) -> None:
        attempts.append(ctx.attempt)
        raise ConnectionError("pager down")

    mounted = mount(broker, router, _config())
    dlq: list[tuple[dict[str, str], bytes]] = []
    family.dlq_subscriber(broker, "orders.dlq", dlq)
    publish = family.publisher(broker, "orders.events")
    event = SagaEvent(saga_id="s-1", type=EventType.SAGA_FAILED)
    async with family.test_broker(broker):
        await publish(event)
    assert attempts == [1, 2, 3]  # the policy's 3 attempts, in place
    [(headers, body)] = dlq
    assert headers[Headers.DLQ_REASON].startswith("retries_exhausted: ConnectionError")
    assert headers[Headers.ORIGINAL_TOPIC] == "orders.events"
    assert headers[Headers.ATTEMPTS] == "3"
    assert headers[Headers.DLQ_HANDLER] == "pager"
    assert headers[Headers.EVENT_ID] == event.id
    from sagamesh.serialization import get_serializer

    assert get_serializer("json").decode(body) == event  # the original bytes, unchanged
    metrics = mounted.get_metrics()
    assert (metrics.retried, metrics.dead_lettered, metrics.acked) == (2, 1, 0)


async def test_handler_dead_letter_and_undecodable_bytes(family: Family) -> None:
    broker = family.make()
    router = EventRouter()

    class Strict(SagaEventHandler):
        config = EventHandlerConfig(handler_id="strict",
                                    supported_event_types=[EventType.SAGA_STARTED])

        async def handle_saga_event(self, event: SagaEvent, ctx: HandlerContext) -> None:
            raise ValueError("bad order")

        async def on_event_failed(self, event: SagaEvent, error: BaseException) -> FailureAction:
            return FailureAction.DEAD_LETTER

    router.register(Strict())
    mount(broker, router, _config())
    dlq: list[tuple[dict[str, str], bytes]] = []
    family.dlq_subscriber(broker, "orders.dlq", dlq)
    publish = family.publisher(broker, "orders.events")
    raw = family.raw_publisher(broker, "orders.events")
    async with family.test_broker(broker):
        await publish(SagaEvent(saga_id="s-2", type=EventType.SAGA_STARTED))
        await raw(Message(id="poison-1", topic="orders.events", key="s-3", body=b"\xff\x00",
                          headers={Headers.CONTENT_TYPE: "application/json"}))
    reasons = sorted(h[Headers.DLQ_REASON].split(":")[0] for h, _ in dlq)
    assert reasons == ["decode_error", "handler_dead_letter"]
    poison = next(body for h, body in dlq if h[Headers.DLQ_REASON].startswith("decode"))
    assert poison == b"\xff\x00"


async def test_duplicates_are_skipped_with_an_idempotency_store(family: Family) -> None:
    broker = family.make()
    router = EventRouter()
    seen: list[str] = []

    @router.handler(handler_id="once")
    async def once(event: SagaEvent, ctx: HandlerContext) -> None:
        seen.append(event.id)

    mounted = mount(broker, router, _config(idempotency=MemoryIdempotencyStore(ttl=60)))
    publish = family.publisher(broker, "orders.events")
    event = SagaEvent(saga_id="s", type=EventType.SAGA_STARTED)
    async with family.test_broker(broker):
        for _ in range(3):
            await publish(event)
    assert seen == [event.id]
    assert mounted.get_metrics().duplicates == 2


async def test_app_lifespan_starts_and_stops_handlers_and_asyncapi_lists_them(
        family: Family) -> None:
    from faststream import TestApp

    broker = family.make()
    app = FastStream(broker, specification=AsyncAPI(title="orders"))
    router = EventRouter()
    lifecycle: list[str] = []

    class Audit(SagaEventHandler):
        config = EventHandlerConfig(handler_id="audit")

        async def start(self) -> None:
            lifecycle.append("start")

        async def stop(self) -> None:
            lifecycle.append("stop")

        async def handle_saga_event(self, event: SagaEvent, ctx: HandlerContext) -> None:
            lifecycle.append(f"event:{event.saga_id}")

    router.register(Audit())
    mount(broker, router, _config(topic_strategy="per_type", dlq_topic="orders.dlq"), app=app)
    publish = family.publisher(broker, f"orders.events.{EventType.SAGA_STARTED.value}")
    async with family.test_broker(broker), TestApp(app):
        assert lifecycle == ["start"]
        await publish(SagaEvent(saga_id="x", type=EventType.SAGA_STARTED))
    assert lifecycle == ["start", "event:x", "stop"]

    channels = app.schema.to_specification().to_jsonable()["channels"]
    # per_type with a handler for every type: one mounted subscriber per event type.
    mounted = [c for c in channels
               if c.startswith("sagamesh:orders.events.") and c.endswith(":orders")]
    assert len(mounted) == len(EventType)
    assert "sagamesh:orders.events.saga.started:orders" in mounted
    assert any(c.startswith("sagamesh-dlq:orders.dlq") for c in channels)


def test_unsupported_broker_is_a_clear_config_error() -> None:
    from sagamesh.errors import ConfigError

    with pytest.raises(ConfigError, match="NatsBroker, RabbitBroker or KafkaBroker"):
        mount(object(), EventRouter())
