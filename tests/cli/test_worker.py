"""`sagamesh worker --config FILE [APP]` as a process: consumes from the configured broker,
serves /metrics, drains in-flight work on SIGTERM and exits 0; clear errors otherwise."""

from __future__ import annotations

import asyncio
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sagamesh.brokers.registry import create_broker
from sagamesh.events import EventType, SagaEvent
from sagamesh.publishing import PublisherConfig, SagaEventPublisher
from sagamesh.testing.services import free_port

if TYPE_CHECKING:
    from conftest import Run


async def _until(condition: Callable[[], Any], limit: float, what: str) -> Any:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _metrics(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            return str(resp.read().decode())
    except OSError:
        return ""


async def test_worker_consumes_serves_metrics_and_drains_on_sigterm(
        nats_url: str, unique: str, tmp_path: Path, spawn: Callable[..., Any],
        write_config: Callable[..., Path]) -> None:
    port = free_port()
    topic, group = f"worker.{unique}.events", f"worker-{unique}"
    config = write_config({
        "app": "worker_fixture:app",  # SPEC §8's `worker --config FILE`: the app is in the file
        "broker": {"type": "nats", "url": nats_url},
        "consumer": {"topic_prefix": topic, "group": group, "dlq_topic": f"{topic}.dlq"},
        "metrics": {"enabled": True, "port": port},
    })
    out = tmp_path / "audit.log"
    proc = spawn("worker", "--config", str(config), env={"WORKER_OUT": str(out)})
    # /metrics comes up last, once the consumer is subscribed.
    await _until(lambda: _metrics(port) or proc.poll() is not None, 60, "the worker")
    assert proc.poll() is None, proc.stderr.read()

    def lines() -> list[str]:
        return out.read_text().split() if out.exists() else []

    async with create_broker(nats_url) as broker, SagaEventPublisher(
            broker, PublisherConfig(topic_prefix=topic)) as publisher:
        await publisher.publish_batch([SagaEvent(saga_id=f"fast-{i}",
                                                 type=EventType.SAGA_STARTED)
                                       for i in range(3)])
        await _until(lambda: len(lines()) == 3, 30, "the fast events")
        text = _metrics(port)
        assert 'sagamesh_consumed_total{handler="audit",outcome="ok"} 3.0' in text
        await publisher.publish_saga_event(SagaEvent(saga_id="slow", type=EventType.SAGA_STARTED,
                                                     data={"slow": True}))
        await _until(lambda: "start:slow" in lines(), 30, "the slow event to start")

    proc.send_signal(signal.SIGTERM)  # while the slow handler is running
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "ready" in stdout and "stopping" in stdout and stdout.rstrip().endswith("stopped")
    assert f"consuming  {topic} as group {group}" in stdout
    assert "done:slow" in lines()  # drained, not cut off

    import nats
    from sagamesh_nats.naming import safe_name, stream_name

    nc = await nats.connect(nats_url)
    try:
        info = await nc.jsm().consumer_info(stream_name("SAGAMESH_", topic), safe_name(group))
        # Every message was acknowledged before the worker exited: nothing comes back.
        assert (info.num_ack_pending, info.num_pending, info.delivered.stream_seq) == (0, 0, 4)
        await nc.jsm().delete_stream(stream_name("SAGAMESH_", topic))
    finally:
        await nc.close()


def test_worker_errors(sagamesh: Run, write_config: Callable[..., Path]) -> None:
    config = write_config({"broker": {"type": "nats",
                                      "url": f"nats://127.0.0.1:{free_port()}",
                                      "connect_timeout": 1}})
    proc = sagamesh("worker", "--config", str(config), "no_such_module:app")
    assert proc.returncode == 2 and "cannot import module 'no_such_module'" in proc.stderr
    proc = sagamesh("worker", "--config", str(config), "worker_fixture")
    assert proc.returncode == 2 and "APP must look like 'module:attribute'" in proc.stderr
    proc = sagamesh("worker", "--config", str(config), "worker_fixture:nothing")
    assert proc.returncode == 2 and "has no attribute 'nothing'" in proc.stderr
    proc = sagamesh("worker", "--config", str(config), "worker_fixture:app", timeout=60)
    assert proc.returncode == 3 and "cannot reach the nats broker" in proc.stderr
    proc = sagamesh("worker", "--config", str(config))
    assert proc.returncode == 2 and "no app to run" in proc.stderr and "'app'" in proc.stderr
    with_app = write_config({"app": "worker_fixture:nothing", "broker": {"type": "memory"}},
                            "with_app.yaml")
    proc = sagamesh("worker", "--config", str(with_app))  # the app comes from the file
    assert proc.returncode == 2 and "has no attribute 'nothing'" in proc.stderr
    proc = sagamesh("worker", "--config", str(with_app), "no_such_module:app")  # APP wins
    assert proc.returncode == 2 and "cannot import module 'no_such_module'" in proc.stderr
    proc = sagamesh("worker", "--help")
    assert proc.returncode == 0 and "SIGTERM" in proc.stdout
