"""Rounds, timing and statistics of the throughput harness (broker-independent)."""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from sagamesh.events import SagaEvent
from sagamesh.message import Message
from sagamesh.serialization import get_serializer, to_message
from sagamesh.testing.samples import typical_event


@dataclass(frozen=True, slots=True)
class Payload:
    """What every case sends: the typical event, encoded once (the raw clients send these bytes;
    sagamesh gets the events, with a fresh id each, and encodes them itself)."""

    body: bytes
    key: bytes

    @staticmethod
    def typical() -> Payload:
        event = typical_event()
        return Payload(get_serializer("json").encode(event), event.saga_id.encode())


def fresh_events(count: int) -> list[SagaEvent]:
    """``count`` copies of the typical event with fresh ids (brokers de-duplicate on ids)."""
    base = typical_event()
    replace = msgspec.structs.replace
    return [replace(base, id=str(uuid.uuid4())) for _ in range(count)]


def fresh_messages(count: int, topic: str) -> list[Message]:
    serializer = get_serializer("json")
    return [to_message(e, topic, serializer) for e in fresh_events(count)]


async def no_op_handler(event: SagaEvent) -> None:
    """The handler of ``consume.raw.decode``: with sagamesh's json decode of each body, the
    minimum a typed consumer does per event (``await no_op_handler(decode(body))``)."""


# A case measures one thing once: given the event count, it returns events/s.
Runner = Callable[[int], Awaitable[float]]


@dataclass(slots=True)
class Case:
    """``name`` is ``<op>.<impl>.<mode>``, e.g. ``publish.raw.pipelined``."""

    name: str
    run: Runner


async def timed(count: int, body: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await body()
    return count / (time.perf_counter() - start)


class ConsumeClock:
    """Times a consumer from its first handled message to its ``count``-th: connection,
    subscription setup and group joins are excluded alike for every client."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.seen = 0
        self.first = 0.0
        self.last = 0.0
        self.done = asyncio.Event()

    def tick(self) -> None:
        self.seen += 1
        if self.seen == 1:
            self.first = time.perf_counter()
        if self.seen == self.count:
            self.last = time.perf_counter()
            self.done.set()

    async def wait(self, limit: float) -> float:
        try:
            await asyncio.wait_for(self.done.wait(), limit)
        except TimeoutError:
            raise TimeoutError(f"consumed {self.seen} of {self.count} within {limit} s") from None
        if self.count < 2 or self.last <= self.first:
            return float("inf")
        return (self.count - 1) / (self.last - self.first)


@dataclass(slots=True)
class Summary:
    median: float
    minimum: float
    maximum: float
    q1: float
    q3: float
    rounds: list[float]

    @staticmethod
    def of(values: Sequence[float]) -> Summary:
        ordered = sorted(values)
        if len(ordered) >= 4:
            q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
        else:
            q1, q3 = ordered[0], ordered[-1]
        return Summary(statistics.median(ordered), ordered[0], ordered[-1], q1, q3,
                       [round(v, 1) for v in values])

    def as_dict(self) -> dict[str, Any]:
        return {"median": round(self.median, 1), "min": round(self.minimum, 1),
                "max": round(self.maximum, 1), "q1": round(self.q1, 1), "q3": round(self.q3, 1),
                "rounds": self.rounds}


@dataclass(slots=True)
class SuiteResult:
    broker: str
    cases: dict[str, Summary] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    paired_ratios: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"cases": {k: v.as_dict() for k, v in self.cases.items()},
                "ratios": self.ratios, "paired_ratios": self.paired_ratios,
                "errors": self.errors}


# (ratio name, numerator case, denominator case, target or None)
RATIOS: list[tuple[str, str, str, float | None]] = [
    ("single_vs_raw", "publish.sagamesh.single", "publish.raw.single", 0.9),
    ("batch_vs_raw_pipelined", "publish.sagamesh.batch", "publish.raw.pipelined", 0.9),
    ("batch_vs_raw_pipelined_same_headers", "publish.sagamesh.batch",
     "publish.raw.pipelined_headers", None),
    ("single_vs_raw_same_headers", "publish.sagamesh.single", "publish.raw.single_headers",
     None),
    ("consume_vs_raw", "consume.sagamesh.consumer", "consume.raw.ack", 0.85),
    ("consume_vs_raw_decode", "consume.sagamesh.consumer", "consume.raw.decode", None),
    ("consume_unordered_vs_raw", "consume.sagamesh.consumer_unordered", "consume.raw.ack",
     None),
    ("batch_vs_faststream", "publish.sagamesh.batch", "publish.faststream.single", 3.0),
    ("single_vs_faststream", "publish.sagamesh.single", "publish.faststream.single", None),
    ("consume_vs_faststream", "consume.sagamesh.consumer", "consume.faststream.ack", None),
]


def ratios(cases: dict[str, Summary]) -> dict[str, float]:
    """Ratio of the medians over rounds."""
    out: dict[str, float] = {}
    for name, num, den, _ in RATIOS:
        if num in cases and den in cases and cases[den].median > 0:
            out[name] = round(cases[num].median / cases[den].median, 3)
    return out


def paired_ratios(cases: dict[str, Summary]) -> dict[str, float]:
    """Median over rounds of the per-round ratio: both cases of a round ran seconds apart, so
    a slow spell of the shared machine cancels out of their ratio."""
    out: dict[str, float] = {}
    for name, num, den, _ in RATIOS:
        if num in cases and den in cases:
            pairs = [a / b for a, b in zip(cases[num].rounds, cases[den].rounds, strict=False)
                     if b > 0]
            if pairs:
                out[name] = round(statistics.median(pairs), 3)
    return out


async def run_rounds(suites: Mapping[str, Sequence[Case]], *, count: int, rounds: int,
                     warmup: int, log: Callable[[str], None]) -> dict[str, SuiteResult]:
    """A warm-up pass, then ``rounds`` passes over every case of every broker, interleaved:
    round r runs each case once before round r+1 starts, so a slow spell on the (shared)
    machine hits all cases alike; the medians over rounds are what is compared.

    Every other round runs a broker's cases in reverse order, so no case always runs right
    after the same one, or always first of the cases a ratio compares: a broker still
    working off the previous case (RabbitMQ deleting the persistent messages a purge dropped,
    a growing queue) would otherwise weigh on the same case every round."""
    results = {broker: SuiteResult(broker) for broker in suites}
    samples: dict[str, dict[str, list[float]]] = {
        broker: {case.name: [] for case in cases} for broker, cases in suites.items()}
    for round_no in range(rounds + 1):
        n = warmup if round_no == 0 else count
        for broker, cases in suites.items():
            errors = results[broker].errors
            for case in (cases if round_no % 2 else reversed(cases)):
                if case.name in errors:
                    continue
                gc.collect()  # untimed: no case pays for the garbage of the one before
                try:
                    rate = await case.run(n)
                except Exception as exc:  # a failing case is reported, the others go on
                    errors[case.name] = f"{type(exc).__name__}: {exc}"
                    log(f"  {broker} {case.name}: FAILED {exc!r}")
                    log(traceback.format_exc(limit=4))
                    continue
                if round_no:
                    samples[broker][case.name].append(rate)
                log(f"  {broker} {'warm-up' if not round_no else f'round {round_no}'} "
                    f"{case.name}: {rate:,.0f}/s")
    for broker, result in results.items():
        result.cases = {name: Summary.of(v) for name, v in samples[broker].items() if v}
        result.ratios = ratios(result.cases)
        result.paired_ratios = paired_ratios(result.cases)
    return results
