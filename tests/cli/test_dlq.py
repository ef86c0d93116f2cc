"""`sagamesh dlq list|show|replay|purge` against a real broker's DLQ (RabbitMQ): reading never
consumes; replay republishes to the original topic; purge deletes for good."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sagamesh.brokers.registry import create_broker
from sagamesh.dlq_message import dead_letter
from sagamesh.events import EventType, SagaEvent
from sagamesh.message import Headers
from sagamesh.serialization import get_serializer, to_message

if TYPE_CHECKING:
    from conftest import Run


def _entries(proc: Any) -> list[dict[str, Any]]:
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


async def test_dlq_commands_on_rabbitmq(sagamesh: Run, amqp_url: str, unique: str,
                                        write_config: Callable[..., Path]) -> None:
    topic, dlq_topic = f"cli.{unique}.events", f"cli.{unique}.dlq"
    config = str(write_config({"broker": {"type": "rabbitmq", "url": amqp_url},
                               "dlq": {"topic": dlq_topic, "group": f"ops-{unique}"}}))
    args = ("--config", config, "--wait", "0.3")
    # The first read declares the DLQ group's queue (as a DLQ handler in a worker would).
    assert _entries(sagamesh("dlq", "list", "--json", *args)) == []
    events = [SagaEvent(saga_id=f"order-{i}", type=EventType.SAGA_STEP_FAILED, data={"i": i})
              for i in range(3)]
    old = datetime.now(UTC) - timedelta(hours=2)
    async with create_broker(amqp_url) as broker:
        for i, event in enumerate(events):
            message = to_message(event, topic, get_serializer("json"))
            await broker.publish(dead_letter(message, dlq_topic=dlq_topic,
                                             reason="retries_exhausted: ConnectionError: down",
                                             attempts=5, error=ConnectionError("down"),
                                             first_failure=old if i == 2 else None))

        listed = _entries(sagamesh("dlq", "list", "--json", *args))
        assert sorted(e["id"] for e in listed) == sorted(e.id for e in events)
        assert {e["original_topic"] for e in listed} == {topic}
        assert {e["attempts"] for e in listed} == {5}
        assert all(e["reason"].startswith("retries_exhausted") for e in listed)
        # Listing did not consume anything: the same three are still there.
        table = sagamesh("dlq", "list", *args)
        assert f"DLQ {dlq_topic} (3 message(s))" in table.stdout

        shown = sagamesh("dlq", "show", events[0].id, *args)
        assert shown.returncode == 0, shown.stderr
        detail = json.loads(shown.stdout)
        assert detail["event"]["saga_id"] == "order-0" and detail["event"]["data"] == {"i": 0}
        assert detail["headers"][Headers.DLQ_REASON].startswith("retries_exhausted")

        missing = sagamesh("dlq", "show", "no-such-id", *args)
        assert missing.returncode == 1 and "no dead letter with id 'no-such-id'" in missing.stderr

        received: asyncio.Queue[Any] = asyncio.Queue()

        async def on_original(delivery: Any) -> None:
            await received.put(delivery.message)

        sub = await broker.subscribe(topic, on_original, group=f"orig-{unique}")
        try:
            replay = sagamesh("dlq", "replay", events[0].id, *args)
            assert replay.returncode == 0, replay.stderr
            assert f"replayed {events[0].id} → {topic}" in replay.stdout
            message = await asyncio.wait_for(received.get(), 20)
            assert message.id == events[0].id
            assert message.headers[Headers.DLQ_RECOVERIES] == "1"
            assert Headers.DLQ_REASON not in message.headers
        finally:
            await sub.close()
        left = _entries(sagamesh("dlq", "list", "--json", *args))
        assert sorted(e["id"] for e in left) == sorted([events[1].id, events[2].id])

        purge_old = sagamesh("dlq", "purge", "--yes", "--older-than", "3600", *args)
        assert purge_old.returncode == 0 and "purged 1 dead letter(s)" in purge_old.stdout
        assert [e["id"] for e in _entries(sagamesh("dlq", "list", "--json", *args))] == \
            [events[1].id]
        refused = sagamesh("dlq", "purge", *args, input="n\n")
        assert refused.returncode == 1 and "aborted" in refused.stderr
        purge = sagamesh("dlq", "purge", "--yes", *args)
        assert purge.returncode == 0 and "purged 1 dead letter(s)" in purge.stdout
        assert _entries(sagamesh("dlq", "list", "--json", *args)) == []
        usage = sagamesh("dlq", "replay", *args)
        assert usage.returncode == 2 and "give message id(s) or --all" in usage.stderr

    import aio_pika
    from sagamesh_rabbitmq._topology import group_queue

    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for queue, name in ((dlq_topic, f"ops-{unique}"), (topic, f"orig-{unique}")):
            await channel.queue_delete(group_queue("sagamesh", queue, name))
