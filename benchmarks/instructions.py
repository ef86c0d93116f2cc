"""Instructions per consumed record, counted by valgrind's callgrind: repeatable where wall
time on a shared 2-core VM is not (the same run twice varies by 30% there; the count does not).

Each stage runs in a child interpreter twice, with ``--small`` and ``--large`` records; the
difference divided by the difference in records is the stage's cost per record, free of start-up
and set-up. The stages build on each other, so their differences say where the cost is:

* ``from_record``: an aiokafka ``ConsumerRecord`` to a :class:`~sagamesh.message.Message`;
* ``decode``: the typical event's JSON body to a ``SagaEvent`` (``MessageProcessor.decode``);
* ``prepare``: decode + route (``MessageProcessor.prepare``);
* ``on_delivery``: ``EventConsumer``'s whole per-delivery path (prepare, dispatcher slot,
  context, a no-op handler, ack) for a delivery that settles without waiting;
* ``kafka_adapter``: ``sagamesh_kafka``'s subscription from fetched records to a settled ack
  (offsets, ordering, handler tasks), with a no-op handler;
* ``kafka_consumer``: the adapter feeding ``EventConsumer`` (what the harness's Kafka
  ``consume.sagamesh.consumer`` case runs per record, minus aiokafka's fetch and parse).

Run: ``.venv/bin/python -m benchmarks.instructions [--out benchmarks/results/x.json]`` (needs
valgrind; about four minutes). Not part of the test command.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

STAGES = ("from_record", "decode", "prepare", "on_delivery", "kafka_adapter", "kafka_consumer")
SETUP = 3072  # records built in every run, whatever the count (so set-up cancels out)


class _Delivery:
    """A delivery that settles at once, as the memory broker's does."""

    __slots__ = ("attempt", "message", "offset", "partition", "settled")

    def __init__(self, message: Any) -> None:
        self.message = message
        self.attempt = 1
        self.partition = 0
        self.offset = 0
        self.settled = False

    async def ack(self) -> None:
        self.settled = True

    async def nack(self, delay: float | None = None) -> None:
        self.settled = True

    async def reject(self) -> None:
        self.settled = True


async def _run_stage(stage: str, count: int) -> int:
    """Put ``count`` records through ``stage``; returns how many came through it right."""
    from aiokafka.structs import ConsumerRecord, TopicPartition

    from sagamesh.brokers.kafka_wire import from_record, record_headers, record_key
    from sagamesh.brokers.memory import MemoryBroker
    from sagamesh.consuming import ConsumerConfig, EventConsumer, EventRouter, HandlerContext
    from sagamesh.consuming.processor import Prepared
    from sagamesh.events import SagaEvent
    from sagamesh.retry import NoRetryPolicy

    from .throughput.core import fresh_messages

    records = [ConsumerRecord("bench", 0, i, 0, 0, record_key(m), m.body, None, len(m.body), 0,
                              tuple(record_headers(m)))
               for i, m in enumerate(fresh_messages(SETUP, "bench"))]
    messages = [from_record(r) for r in records]
    deliveries = [_Delivery(m) for m in messages]
    done = asyncio.Event()
    seen = 0

    def tick() -> None:
        nonlocal seen
        seen += 1
        if seen == count:
            done.set()

    router = EventRouter()

    @router.handler()
    async def on_event(event: SagaEvent, ctx: HandlerContext) -> None:
        tick()

    # The broker only serves DLQ publishes, which a no-op handler never causes.
    consumer = EventConsumer(MemoryBroker(), router,
                             ConsumerConfig(topics=["bench"], retry=NoRetryPolicy()))
    processor = consumer.processor
    gc.collect()
    # Each loop counts what came out right, so a stage that stopped doing its job shows.
    if stage == "from_record":
        pairs = zip(records[:count], messages[:count], strict=True)
        return sum(from_record(r).id == m.id for r, m in pairs)
    if stage == "decode":
        return sum(processor.decode(m).id == m.id for m in messages[:count])
    if stage == "prepare":
        return sum(processor.prepare(m).__class__ is Prepared for m in messages[:count])
    if stage == "on_delivery":
        on_delivery = consumer._on_delivery
        for delivery in deliveries[:count]:
            await on_delivery(delivery)
    else:
        from sagamesh_kafka._options import KafkaOptions
        from sagamesh_kafka._subscription import KafkaSubscription

        async def no_op(delivery: Any) -> None:
            tick()

        handler = consumer._on_delivery if stage == "kafka_consumer" else no_op
        sub = KafkaSubscription(bootstrap=["127.0.0.1:9"], options=KafkaOptions(), topic="bench",
                                handler=handler, group="bench", max_in_flight=256, ordered=True,
                                on_close=lambda _sub: None)
        tp = TopicPartition("bench", 0)
        for start in range(0, count, 512):  # as fetched: a batch, then the handlers run
            sub._accept(tp, records[start:min(start + 512, count)])
            sub._dispatch.pump()
            await asyncio.sleep(0)
        await done.wait()
        await sub._consumer.stop()  # never started: only quiets aiokafka's unclosed warning
    return seen


def _instructions(stage: str, count: int) -> int:
    # A fixed hash seed: str hashing is randomised per process, which moves the count ~2%.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         "-m", "benchmarks.instructions", "--stage", stage, "--count", str(count)],
        capture_output=True, text=True, check=True, env=env)
    found = re.search(r"Collected\s*:\s*([\d,]+)|refs:\s*([\d,]+)", out.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in callgrind's output:\n{out.stderr[-2000:]}")
    return int((found.group(1) or found.group(2)).replace(",", ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=3000)
    parser.add_argument("--stages", nargs="*", choices=STAGES, default=list(STAGES))
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.stage:  # a child run under valgrind
        asyncio.run(_run_stage(args.stage, args.count))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed", file=sys.stderr)
        return 2
    if not 0 < args.small < args.large <= SETUP:
        parser.error(f"need 0 < --small < --large <= {SETUP}")
    per_record: dict[str, int] = {}
    for stage in args.stages:
        small = _instructions(stage, args.small)
        large = _instructions(stage, args.large)
        per_record[stage] = round((large - small) / (args.large - args.small))
        print(f"{stage:15s} {per_record[stage]:>8,} instructions/record", flush=True)
    if args.out:
        report = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join([".venv/bin/python -m benchmarks.instructions",
                                 *(argv or sys.argv[1:])]),
            "python": platform.python_version(),
            "records": [args.small, args.large],
            "instructions_per_record": per_record,
        }
        with open(args.out, "w") as fh:
            json.dump(report, fh, indent=1)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
