"""Serializer micro-benchmark: encoded size and encode/decode time per event.

``measure()`` is what ``sagamesh bench serializers`` renders; ``benchmarks/test_serializers.py``
measures the same operations under pytest-benchmark. A stdlib-``json`` serializer that writes the
same wire form is included as the baseline a user without msgspec would write.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from ..errors import ConfigError, SerializationError
from ..events import ErrorType, EventType, SagaError, SagaEvent
from ..testing.samples import SAMPLES
from ._time import as_utc, duration_to_ns, ns_to_duration
from .base import Serializer
from .registry import JSON_CONTENT_TYPE, get_serializer

BASELINE = "stdlib-json"


@dataclass(frozen=True, slots=True)
class BenchRow:
    serializer: str
    size_name: str
    encoded_bytes: int
    encode_us: float
    decode_us: float

    @property
    def total_us(self) -> float:
        return self.encode_us + self.decode_us


class StdlibJsonSerializer:
    """The baseline: the seed's JSON wire form with only the standard library."""

    name: str = BASELINE
    content_type: str = JSON_CONTENT_TYPE

    def encode(self, event: SagaEvent) -> bytes:
        return json.dumps(_to_wire(event), separators=(",", ":")).encode()

    def decode(self, data: bytes) -> SagaEvent:
        try:
            wire = json.loads(data)
            error = wire.get("error")
            return SagaEvent(
                id=wire["id"],
                saga_id=wire["saga_id"],
                type=EventType(wire["type"]),
                step_id=wire.get("step_id", ""),
                version=wire.get("version", "1.0"),
                timestamp=_parse_time(wire["timestamp"]),
                correlation_id=wire.get("correlation_id", ""),
                data=wire.get("data"),
                previous_state=wire.get("previous_state"),
                new_state=wire.get("new_state"),
                error=None if error is None else _error_from_wire(error),
                duration=ns_to_duration(wire.get("duration", 0)),
                attempt=wire.get("attempt", 0),
                max_attempts=wire.get("max_attempts", 0),
                metadata=wire.get("metadata", {}),
                source=wire.get("source", ""),
                service=wire.get("service", ""),
                service_version=wire.get("service_version", ""),
                trace_id=wire.get("trace_id", ""),
                span_id=wire.get("span_id", ""),
                parent_span_id=wire.get("parent_span_id", ""),
                instance_id=wire.get("instance_id", ""),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SerializationError(f"invalid JSON event: {exc}") from exc


def _format_time(value: datetime) -> str:
    return as_utc(value).isoformat().replace("+00:00", "Z")


def _parse_time(value: str) -> datetime:
    return as_utc(datetime.fromisoformat(value))


def _to_wire(event: SagaEvent) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "id": event.id,
        "saga_id": event.saga_id,
        "step_id": event.step_id,
        "type": str(event.type),
        "version": event.version,
        "timestamp": _format_time(event.timestamp),
        "correlation_id": event.correlation_id,
        "data": event.data,
        "previous_state": event.previous_state,
        "new_state": event.new_state,
        "duration": duration_to_ns(event.duration),
        "attempt": event.attempt,
        "max_attempts": event.max_attempts,
        "metadata": event.metadata,
        "source": event.source,
        "service": event.service,
        "service_version": event.service_version,
        "trace_id": event.trace_id,
        "span_id": event.span_id,
        "parent_span_id": event.parent_span_id,
        "instance_id": event.instance_id,
    }
    if event.error is not None:
        wire["error"] = _error_to_wire(event.error)
    return wire


def _error_to_wire(error: SagaError) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "code": error.code,
        "message": error.message,
        "type": str(error.type),
        "retryable": error.retryable,
        "timestamp": _format_time(error.timestamp),
        "details": error.details,
    }
    if error.cause is not None:
        wire["cause"] = _error_to_wire(error.cause)
    return wire


def _error_from_wire(wire: dict[str, Any]) -> SagaError:
    cause = wire.get("cause")
    return SagaError(
        code=wire["code"],
        message=wire["message"],
        type=ErrorType(wire.get("type", "system")),
        retryable=wire.get("retryable", False),
        timestamp=_parse_time(wire["timestamp"]) if "timestamp" in wire else datetime.now(UTC),
        details=wire.get("details", {}),
        cause=None if cause is None else _error_from_wire(cause),
    )


def _per_call_us(fn: Callable[[], object], rounds: int, min_round_s: float) -> float:
    """Best-of-``rounds`` CPU time per call, each round long enough to dwarf the clock's cost.

    CPU time (``process_time``) rather than wall time: on a shared machine the wall clock also
    counts the time other processes hold the core.
    """
    number = 1
    while True:  # calibrate: double until one round takes min_round_s
        start = time.process_time()
        for _ in range(number):
            fn()
        elapsed = time.process_time() - start
        if elapsed >= min_round_s or number >= 1 << 20:
            break
        number *= 2
    best = elapsed / number
    for _ in range(rounds - 1):
        start = time.process_time()
        for _ in range(number):
            fn()
        best = min(best, (time.process_time() - start) / number)
    return best * 1e6


def _resolve(serializers: Iterable[str | Serializer], baseline: bool) -> list[Serializer]:
    resolved = [s if not isinstance(s, str) else get_serializer(s) for s in serializers]
    if baseline:
        resolved.append(StdlibJsonSerializer())
    return resolved


def measure(
    serializers: Sequence[str | Serializer] = ("json", "protobuf"),
    sizes: Sequence[str] = ("small", "typical", "large"),
    rounds: int = 5,
    *,
    baseline: bool = True,
    min_round_s: float = 0.02,
) -> list[BenchRow]:
    """One row per serializer and sample size (plus the stdlib-json baseline when asked).

    Times are the best of ``rounds`` per-call means of CPU time, in microseconds: the least
    disturbed figure on a shared machine.
    """
    if rounds < 1:
        raise ConfigError("rounds must be at least 1", field="rounds")
    unknown = [size for size in sizes if size not in SAMPLES]
    if unknown:
        raise ConfigError(
            f"unknown sample size {unknown[0]!r}; choose from {', '.join(SAMPLES)}", field="sizes"
        )
    rows: list[BenchRow] = []
    for serializer in _resolve(serializers, baseline):
        for size in sizes:
            event = SAMPLES[size]()
            body = serializer.encode(event)
            if serializer.decode(body) != event:
                raise SerializationError(f"{serializer.name} does not round-trip the {size} event")
            rows.append(
                BenchRow(
                    serializer=serializer.name,
                    size_name=size,
                    encoded_bytes=len(body),
                    encode_us=_per_call_us(partial(serializer.encode, event), rounds, min_round_s),
                    decode_us=_per_call_us(partial(serializer.decode, body), rounds, min_round_s),
                )
            )
    return rows


def render(rows: Iterable[BenchRow]) -> str:
    """A plain-text table of the rows (the CLI draws its own, richer one)."""
    lines = [
        f"{'serializer':<12} {'size':<8} {'bytes':>7} {'encode µs':>10} {'decode µs':>10}"
        f" {'total µs':>9}"
    ]
    for row in rows:
        lines.append(
            f"{row.serializer:<12} {row.size_name:<8} {row.encoded_bytes:>7}"
            f" {row.encode_us:>10.2f} {row.decode_us:>10.2f} {row.total_us:>9.2f}"
        )
    return "\n".join(lines)


__all__ = ["BASELINE", "BenchRow", "StdlibJsonSerializer", "measure", "render"]
