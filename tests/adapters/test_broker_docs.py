"""docs/broker-kafka.md and docs/broker-rabbitmq.md stay true: every Python program on them runs
against the real broker (tansu for Kafka, RabbitMQ), with its URL, topic and exchange given
through the environment variables the programs read. Under ``CI=true`` a missing broker fails
(the ``kafka_bootstrap`` and ``amqp_url`` fixtures), locally it skips."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from sagamesh.brokers.amqp_wire import group_queue

DOCS = Path(__file__).resolve().parents[2] / "docs"
KAFKA = re.findall(r"```python\n(.*?)```", (DOCS / "broker-kafka.md").read_text(), re.S)
RABBIT_TEXT = (DOCS / "broker-rabbitmq.md").read_text()
RABBIT = re.findall(r"```python\n(.*?)```", RABBIT_TEXT, re.S)
RABBIT_YAML = re.findall(r"```yaml\n(.*?)```", RABBIT_TEXT, re.S)
# The groups the RabbitMQ programs subscribe with on topic ``saga.events`` (for the cleanup).
RABBIT_GROUPS = ("orders", "billing", "proxy-demo")


def _run(program: str, env: dict[str, str], timeout: float = 120) -> str:
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **env})
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_pages_have_their_programs() -> None:
    assert len(KAFKA) == 2  # produce/consume with a delayed nack, transactions
    assert len(RABBIT) == 3  # produce/consume + transaction, transactions, TcpProxy
    assert len(RABBIT_YAML) == 1


# -- Kafka -------------------------------------------------------------------------------------


def _on_tansu() -> bool:
    """True unless SAGAMESH_TEST_KAFKA_BOOTSTRAP points the tests at another Kafka."""
    return not os.environ.get("SAGAMESH_TEST_KAFKA_BOOTSTRAP")


@pytest.mark.kafka
def test_kafka_produce_consume_program(kafka_bootstrap: str, unique: str) -> None:
    out = _run(KAFKA[0], {"KAFKA_URL": f"kafka://{kafka_bootstrap}",
                          "KAFKA_TOPIC": f"kx.doc.{unique}"})
    seen, redelivered, native = out.split()
    assert (seen, redelivered) == ("100", "True"), out  # all arrived, evt-1 on attempt 2
    if _on_tansu():
        assert native == "False", out


@pytest.mark.kafka
def test_kafka_transaction_program(kafka_bootstrap: str, unique: str) -> None:
    out = _run(KAFKA[1], {"KAFKA_URL": f"kafka://{kafka_bootstrap}",
                          "KAFKA_TOPIC": f"kx.doctx.{unique}"})
    first, second = out.splitlines()
    if first == "native transactions: True":
        assert second == "committed", out
    else:
        assert first == "native transactions: False", out
        assert second.startswith("refused: this Kafka broker has no transactions"), out
    if _on_tansu():
        assert first.endswith("False"), out


# -- RabbitMQ ----------------------------------------------------------------------------------


async def _queues_left(url: str, exchange: str, *, delete: bool) -> list[str]:
    """The programs' group queues that still exist (deleting them, and the exchange, when
    ``delete``)."""
    import aio_pika

    left = []
    connection = await aio_pika.connect(url)
    try:
        for group in RABBIT_GROUPS:
            name = group_queue(exchange, "saga.events", group)
            channel = await connection.channel()
            try:
                await channel.declare_queue(name, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                continue  # not found (the failed passive declare closed the channel)
            left.append(name)
            if delete:
                await channel.queue_delete(name)
            await channel.close()
        if delete:
            channel = await connection.channel()
            with contextlib.suppress(Exception):
                await channel.exchange_delete(exchange)
    finally:
        await connection.close()
    return left


@pytest.fixture
def rabbit_env(amqp_url: str, unique: str) -> Iterator[dict[str, str]]:
    """A private exchange per program; whatever a failed run left behind is deleted."""
    exchange = f"docs-{unique}"
    yield {"AMQP_URL": amqp_url, "AMQP_EXCHANGE": exchange}
    asyncio.run(_queues_left(amqp_url, exchange, delete=True))


@pytest.mark.rabbitmq
def test_rabbitmq_produce_consume_program(rabbit_env: dict[str, str]) -> None:
    out = _run(RABBIT[0], rabbit_env)
    assert out.splitlines() == ["evt-1 1 b'{\"ok\": true}'", "100 True"], out
    # "drop the demo exchange and queues": delete_topology removed the group queue.
    left = asyncio.run(_queues_left(rabbit_env["AMQP_URL"], rabbit_env["AMQP_EXCHANGE"],
                                    delete=False))
    assert left == []


@pytest.mark.rabbitmq
def test_rabbitmq_transaction_program(rabbit_env: dict[str, str]) -> None:
    out = _run(RABBIT[1], rabbit_env)
    assert out.splitlines() == ["['order-1', 'order-2', 'order-4']"], out


@pytest.mark.rabbitmq
def test_rabbitmq_tcpproxy_program(rabbit_env: dict[str, str]) -> None:
    out = _run(RABBIT[2], rabbit_env)
    held, arrived = out.splitlines()
    assert held.startswith("held: RabbitMQ did not confirm message held within 2"), out
    ids, severed = arrived.rsplit(" ", 1)
    assert ids == "['after-outage', 'after-sever', 'held']", out  # the held one arrived too
    assert int(severed) >= 2, out  # sever() and outage() each cut the live connection


def test_rabbitmq_settings_example_builds_the_broker() -> None:
    from sagamesh_rabbitmq import RabbitBroker

    from sagamesh.factories import create_broker
    from sagamesh.settings import Settings

    broker = create_broker(Settings.load(yaml.safe_load(RABBIT_YAML[0])))
    assert isinstance(broker, RabbitBroker)
    options = broker.options
    assert (options.exchange, options.publish_window, options.queue_type) == (
        "orders", 256, "quorum")
