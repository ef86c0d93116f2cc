"""``python -m benchmarks.throughput``: sagamesh against the raw clients and FastStream.

    .venv/bin/python -m benchmarks.throughput --brokers nats,rabbitmq,kafka,memory \
        --count 2000 --rounds 5 --out benchmarks/results/$(date -u +%F).json

Kafka runs on a private tansu broker started for the run (``sagamesh.testing.services``).
Not part of the test suite; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sagamesh.testing.services import service_url

from .core import RATIOS, Case, Payload, run_rounds
from .machine import describe

BROKERS = ("nats", "rabbitmq", "kafka", "memory")


@contextlib.asynccontextmanager
async def _suite(name: str, run_id: str, payload: Payload,
                 consume_timeout: float) -> AsyncIterator[list[Case]]:
    if name == "memory":
        from .memory_cases import memory_suite

        async with memory_suite(run_id, payload, consume_timeout) as cases:
            yield cases
    elif name == "nats":
        from .nats_cases import nats_suite

        async with nats_suite(service_url("nats"), run_id, payload, consume_timeout) as cases:
            yield cases
    elif name == "rabbitmq":
        from .rabbit_cases import rabbit_suite

        async with rabbit_suite(service_url("rabbitmq"), run_id, payload, consume_timeout) as cases:
            yield cases
    elif name == "kafka":
        from sagamesh.testing.services import start_tansu

        from .kafka_cases import kafka_suite

        tansu = start_tansu()
        try:
            async with kafka_suite(tansu.bootstrap, run_id, payload, consume_timeout) as cases:
                yield cases
        finally:
            tansu.stop()
    else:
        raise ValueError(f"unknown broker {name!r} (choose from {', '.join(BROKERS)})")


async def run(brokers: list[str], *, count: int, rounds: int, warmup: int, consume_timeout: float,
              log: Any = print) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    payload = Payload.typical()
    started = time.perf_counter()
    machine = describe()
    async with contextlib.AsyncExitStack() as stack:
        suites = {name: await stack.enter_async_context(
                      _suite(name, run_id, payload, consume_timeout))
                  for name in brokers}
        results = await run_rounds(suites, count=count, rounds=rounds, warmup=warmup, log=log)
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python -m benchmarks.throughput", *sys.argv[1:]]),
        "settings": {"brokers": brokers, "count": count, "rounds": rounds, "warmup": warmup,
                     "payload_bytes": len(payload.body), "unit": "events/s"},
        "machine": machine,
        "duration_s": round(time.perf_counter() - started, 1),
        "targets": {name: {"numerator": num, "denominator": den, "target": target}
                    for name, num, den, target in RATIOS},
        "brokers": {name: result.as_dict() for name, result in results.items()},
    }


def table(report: dict[str, Any]) -> str:
    """Markdown: median events/s (min-max) per case and broker, then the ratios as
    "ratio of medians / median of per-round ratios"."""
    brokers = report["brokers"]
    names = sorted({case for b in brokers.values() for case in b["cases"]})
    lines = ["| case | " + " | ".join(brokers) + " |",
             "|---|" + "---|" * len(brokers)]
    for name in names:
        cells = []
        for b in brokers.values():
            s = b["cases"].get(name)
            cells.append(f"{s['median']:,.0f} ({s['min']:,.0f}-{s['max']:,.0f})" if s else
                         b["errors"].get(name, "-"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| ratio (target): of medians / paired | " + " | ".join(brokers) + " |",
              "|---|" + "---|" * len(brokers)]
    for name, spec in report["targets"].items():
        target = f" (≥ {spec['target']})" if spec["target"] else ""
        cells = [f"{b['ratios'][name]:.2f} / {b['paired_ratios'][name]:.2f}"
                 if name in b["ratios"] else "-" for b in brokers.values()]
        lines.append(f"| {name}{target} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--brokers", default="nats,rabbitmq,kafka,memory",
                        help="comma-separated: " + ",".join(BROKERS))
    parser.add_argument("--count", type=int, default=2000, help="events per case and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=500, help="events per case in warm-up")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds a consume run may take before it fails")
    parser.add_argument("--out", type=Path, default=None,
                        help="result JSON (default benchmarks/results/<UTC date>.json)")
    parser.add_argument("--quiet", action="store_true", help="only the final table")
    args = parser.parse_args(argv)
    brokers = [b.strip() for b in args.brokers.split(",") if b.strip()]
    unknown = [b for b in brokers if b not in BROKERS]
    if unknown or args.count < 2 or args.rounds < 1:
        parser.error(f"bad arguments: unknown brokers {unknown}" if unknown
                     else "--count must be >= 2 and --rounds >= 1")
    out = args.out or Path("benchmarks/results") / f"{datetime.date.today().isoformat()}.json"
    log = (lambda _msg: None) if args.quiet else (lambda msg: print(msg, flush=True))
    # SIGTERM unwinds like Ctrl-C, so the private tansu is stopped and names are cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = asyncio.run(run(brokers, count=args.count, rounds=args.rounds,
                             warmup=min(args.warmup, args.count), consume_timeout=args.timeout,
                             log=log))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(f"\nwritten to {out} in {report['duration_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
