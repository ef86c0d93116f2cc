"""MessageProcessor on its own: the broker-agnostic contract a framework mount relies on."""

from __future__ import annotations

from dataclasses import dataclass, field

from sagamesh.consuming import (
    EventRouter,
    FailureAction,
    HandlerContext,
    MemoryIdempotencyStore,
    MessageProcessor,
    OutcomeKind,
)
from sagamesh.events import EventType, SagaEvent
from sagamesh.message import Headers, Message
from sagamesh.retry import FixedDelayRetryPolicy

from .consuming_helpers import DLQ, TOPIC, event, message


@dataclass
class FakeDelivery:
    message: Message
    attempt: int = 1
    partition: int | None = None
    offset: int | None = None
    actions: list[tuple[str, float | None]] = field(default_factory=list)

    @property
    def settled(self) -> bool:
        return bool(self.actions)

    async def ack(self) -> None:
        self.actions.append(("ack", None))

    async def nack(self, delay: float | None = None) -> None:
        self.actions.append(("nack", delay))

    async def reject(self) -> None:
        self.actions.append(("reject", None))


def _processor(**kw: object) -> tuple[MessageProcessor, list[str]]:
    router = EventRouter()
    calls: list[str] = []

    @router.handler(EventType.SAGA_STARTED, handler_id="ok")
    async def ok(ev: SagaEvent, ctx: HandlerContext) -> None:
        calls.append(f"ok:{ctx.attempt}:{ctx.group}")

    @router.handler(EventType.SAGA_FAILED, handler_id="fails")
    async def fails(ev: SagaEvent, ctx: HandlerContext) -> None:
        raise RuntimeError("nope")

    @router.handler(EventType.SAGA_CANCELLED, handler_id="discards",
                    on_failure=FailureAction.DISCARD)
    async def discards(ev: SagaEvent, ctx: HandlerContext) -> None:
        raise RuntimeError("ignore me")

    processor = MessageProcessor(router, retry=FixedDelayRetryPolicy(3, 0.25), dlq_topic=DLQ,
                                 broker_name="fs-nats", group="g", **kw)  # type: ignore[arg-type]
    return processor, calls


async def test_outcomes_for_every_path() -> None:
    p, calls = _processor()
    assert (await p.process(message(event("a")))).kind is OutcomeKind.ACK
    assert calls == ["ok:1:g"]

    retry = await p.process(message(event("b", EventType.SAGA_FAILED)), attempt=2)
    assert (retry.kind, retry.delay) == (OutcomeKind.RETRY, 0.25)

    failed_msg = message(event("b", EventType.SAGA_FAILED))
    dead = await p.process(failed_msg, attempt=3)
    assert dead.kind is OutcomeKind.DEAD_LETTER and dead.dlq_message is not None
    assert dead.dlq_message.topic == DLQ and dead.dlq_message.body == failed_msg.body
    assert dead.dlq_message.headers[Headers.ATTEMPTS] == "3"
    assert dead.dlq_message.headers[Headers.ORIGINAL_TOPIC] == TOPIC

    assert (await p.process(message(event("c", EventType.SAGA_CANCELLED)))).kind \
        is OutcomeKind.DISCARD
    unrouted = await p.process(message(event("d", EventType.STATE_CHANGED)))
    assert (unrouted.kind, unrouted.note) == (OutcomeKind.ACK, "unrouted")
    poison = await p.process(Message(id="p", topic=TOPIC, body=b"\x00"))
    assert poison.kind is OutcomeKind.DEAD_LETTER
    assert poison.reason.startswith("decode_error")

    m = p.metrics
    assert (m.received, m.decode_errors, m.unrouted, m.handler_failures) == (6, 1, 1, 3)


async def test_duplicates_with_a_store() -> None:
    p, calls = _processor(idempotency=MemoryIdempotencyStore())
    msg = message(event("a"))
    assert (await p.process(msg)).kind is OutcomeKind.ACK
    dup = await p.process(msg)
    assert (dup.kind, dup.note) == (OutcomeKind.ACK, "duplicate")
    assert calls == ["ok:1:g"] and p.metrics.duplicates == 1


async def test_settle_applies_each_outcome_to_a_delivery() -> None:
    p, _ = _processor()
    published: list[Message] = []

    async def publish(m: Message) -> None:
        published.append(m)

    async def down(m: Message) -> None:
        raise ConnectionError("down")

    cases = [
        (message(event("a")), 1, publish, [("ack", None)]),
        (message(event("b", EventType.SAGA_FAILED)), 1, publish, [("nack", 0.25)]),
        (message(event("b", EventType.SAGA_FAILED)), 3, publish, [("ack", None)]),
        (message(event("b", EventType.SAGA_FAILED)), 3, down, [("nack", 0.25)]),
    ]
    for msg, attempt, pub, expected in cases:
        delivery = FakeDelivery(msg, attempt)
        outcome = await p.process(msg, attempt)
        await p.settle(delivery, outcome, pub)
        assert delivery.actions == expected
    assert [m.topic for m in published] == [DLQ]
    m = p.metrics
    assert (m.acked, m.retried, m.dead_lettered, m.dlq_publish_failures) == (1, 1, 1, 1)


async def test_handle_delivery_processes_and_settles_in_one_call() -> None:
    p, calls = _processor()
    published: list[Message] = []

    async def publish(m: Message) -> None:
        published.append(m)

    ok = FakeDelivery(message(event("a")))
    assert (await p.handle_delivery(ok, publish)).kind is OutcomeKind.ACK
    poison = FakeDelivery(Message(id="p", topic=TOPIC, body=b"{"))
    assert (await p.handle_delivery(poison, publish)).kind is OutcomeKind.DEAD_LETTER
    assert ok.actions == [("ack", None)] and poison.actions == [("ack", None)]
    assert calls == ["ok:1:g"] and [m.id for m in published] == ["p"]


async def test_an_unreachable_idempotency_store_means_retry_not_dead_letter() -> None:
    class Down:
        async def contains(self, key: str) -> bool:
            raise ConnectionError("redis down")

        async def add(self, key: str) -> None:
            raise ConnectionError("redis down")

        async def close(self) -> None:
            return None

    p, calls = _processor(idempotency=Down())
    for attempt in (1, 5, 50):  # beyond max_attempts too: an outage is not the event's fault
        outcome = await p.process(message(event("a")), attempt)
        assert (outcome.kind, outcome.delay) == (OutcomeKind.RETRY, 0.25)
        assert outcome.reason.startswith("infrastructure: ConnectionError")
    assert calls == []
