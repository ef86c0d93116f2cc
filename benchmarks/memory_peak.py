"""Peak memory while publishing 1,000,000 events in batches through sagamesh.

    .venv/bin/python -m benchmarks.memory_peak [--events 1000000] [--batch 1000]
        [--url memory://] [--out benchmarks/results/memory-<date>.json]

Events are made batch by batch (fresh ids), published with ``publish_batch`` (confirmed) and
dropped, as a producer streaming events would. The memory broker keeps only its last 1,000
messages (``retention``); with ``--url nats://...`` (or amqp://, kafka://) a real broker
receives them. Peak RSS (``ru_maxrss``) and current RSS are read at checkpoints: if the
publisher retained anything per event, the peak would grow with the count.

On RabbitMQ a message that no queue is bound for is confirmed and dropped at once, which is
cheaper than what a real topic costs; so with an ``amqp://`` URL a durable queue holding the
newest ``--keep`` messages (``x-max-length``, oldest dropped) is bound to the topic first and
deleted afterwards: every publish is routed and stored, and RabbitMQ's disk stays bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import gc
import json
import resource
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec

from sagamesh.brokers.base import Broker
from sagamesh.brokers.memory import MemoryBroker
from sagamesh.publishing import PublisherConfig, SagaEventPublisher
from sagamesh.testing.samples import typical_event

CHECKPOINTS = (10_000, 100_000, 250_000, 500_000, 1_000_000)


def _rss_mib() -> tuple[float, float]:
    """(peak, current) resident set size in MiB."""
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    current = pages * resource.getpagesize() / 2**20
    return round(peak_kib / 1024, 1), round(current, 1)


def _broker(url: str) -> Broker:
    if url.startswith("memory://"):
        return MemoryBroker(url, retention=1_000)
    from sagamesh.brokers.registry import create_broker

    return create_broker(url)


@contextlib.asynccontextmanager
async def _bounded_sink(broker: Broker, url: str, topic: str, keep: int) -> AsyncIterator[None]:
    """On RabbitMQ: a queue keeping the newest ``keep`` messages of ``topic`` (see above)."""
    if not url.startswith(("amqp://", "amqps://")):
        yield
        return
    import aio_pika

    exchange = str(getattr(broker, "exchange", "sagamesh"))
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{topic}:memory-peak", durable=True,
                                            arguments={"x-max-length": keep})
        await queue.bind(exchange, routing_key=topic)
        try:
            yield
        finally:
            await queue.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()


async def measure(events: int, batch: int, url: str, topic: str, keep: int = 10_000,
                  log: Any = print) -> dict[str, Any]:
    checkpoints = sorted({c for c in CHECKPOINTS if c < events} | {events})
    base = typical_event()
    replace = msgspec.structs.replace
    rows: list[dict[str, Any]] = []
    gc.collect()
    peak0, current0 = _rss_mib()
    log(f"before: peak {peak0} MiB, current {current0} MiB")
    broker = _broker(url)
    started = time.perf_counter()
    async with broker, _bounded_sink(broker, url, topic, keep):
        publisher = SagaEventPublisher(broker, PublisherConfig(topic_prefix=topic))
        sent = 0
        next_checkpoint = 0
        while sent < events:
            n = min(batch, events - sent)
            chunk = [replace(base, id=f"{sent + i:012d}-0000-4000-8000-000000000000")
                     for i in range(n)]
            await publisher.publish_batch(chunk)
            sent += n
            if sent >= checkpoints[next_checkpoint]:
                peak, current = _rss_mib()
                rate = sent / (time.perf_counter() - started)
                rows.append({"events": sent, "peak_rss_mib": peak, "rss_mib": current,
                             "events_per_s": round(rate)})
                log(f"{sent:>9,} events: peak RSS {peak} MiB, current {current} MiB, "
                    f"{rate:,.0f} events/s")
                next_checkpoint += 1
        metrics = publisher.get_metrics()
        await publisher.close()
    first, last = rows[0], rows[-1]
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python -m benchmarks.memory_peak", *sys.argv[1:]]),
        "settings": {"events": events, "batch": batch, "url": url.split("@")[-1],
                     **({"rabbitmq_queue_keeps": keep} if url.startswith("amqp") else {}),
                     "payload_bytes": len(msgspec.json.encode(base))},
        "baseline": {"peak_rss_mib": peak0, "rss_mib": current0},
        "checkpoints": rows,
        "growth_mib_first_to_last_checkpoint": round(last["peak_rss_mib"]
                                                     - first["peak_rss_mib"], 1),
        "published_count": metrics.published_count,
        "duration_s": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory_peak")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--url", default="memory://")
    parser.add_argument("--keep", type=int, default=10_000,
                        help="amqp:// only: messages the bound queue keeps (newest)")
    parser.add_argument("--topic", default=f"bench.memory-peak.{uuid.uuid4().hex[:8]}",
                        help="default: unique per run (on a real broker, delete it afterwards)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.events < 1 or args.batch < 1 or args.keep < 1:
        parser.error("--events, --batch and --keep must be >= 1")
    report = asyncio.run(measure(args.events, args.batch, args.url, args.topic, args.keep))
    out = args.out or Path("benchmarks/results") / f"memory-{datetime.date.today()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"growth of peak RSS from {report['checkpoints'][0]['events']:,} to "
          f"{report['checkpoints'][-1]['events']:,} events: "
          f"{report['growth_mib_first_to_last_checkpoint']} MiB; written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
