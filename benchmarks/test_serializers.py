"""Serializer micro benchmarks: encode, decode and encode+decode per event, and encoded size.

Run: .venv/bin/pytest benchmarks/test_serializers.py --benchmark-enable -q
(add ``--benchmark-columns=min,median,stddev,ops`` for a compact table). Serializers: msgspec
JSON, protobuf, and the stdlib-json baseline; sizes: small, typical (~530 B JSON), large (~10 KB).
The encoded size is stored in each benchmark's ``extra_info``. Targets on a typical event:
json encode+decode <= 2.5 us, protobuf <= 10 us, protobuf >= 30 % smaller than json.
"""

from __future__ import annotations

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from sagamesh.events import SagaEvent
from sagamesh.serialization import Serializer, get_serializer
from sagamesh.serialization.bench import StdlibJsonSerializer

SERIALIZERS: dict[str, Serializer] = {
    "json": get_serializer("json"),
    "protobuf": get_serializer("protobuf"),
    "stdlib-json": StdlibJsonSerializer(),
}


@pytest.fixture(params=list(SERIALIZERS), ids=list(SERIALIZERS))
def serializer(request: pytest.FixtureRequest) -> Serializer:
    return SERIALIZERS[request.param]


def _record(
    benchmark: BenchmarkFixture, serializer: Serializer, event: SagaEvent, group: str
) -> bytes:
    """Group by operation and size, so the serializers appear side by side."""
    body = serializer.encode(event)
    benchmark.extra_info["encoded_bytes"] = len(body)
    benchmark.group = group
    return body


def test_encode(
    benchmark: BenchmarkFixture, serializer: Serializer, sample_name: str, sample_event: SagaEvent
) -> None:
    body = _record(benchmark, serializer, sample_event, f"encode {sample_name}")
    assert benchmark(serializer.encode, sample_event) == body


def test_decode(
    benchmark: BenchmarkFixture, serializer: Serializer, sample_name: str, sample_event: SagaEvent
) -> None:
    body = _record(benchmark, serializer, sample_event, f"decode {sample_name}")
    assert benchmark(serializer.decode, body) == sample_event


def test_encode_decode(
    benchmark: BenchmarkFixture, serializer: Serializer, sample_name: str, sample_event: SagaEvent
) -> None:
    _record(benchmark, serializer, sample_event, f"encode+decode {sample_name}")
    encode, decode = serializer.encode, serializer.decode

    def round_trip() -> SagaEvent:
        return decode(encode(sample_event))

    assert benchmark(round_trip) == sample_event


def test_protobuf_is_at_least_30_percent_smaller_on_the_typical_event() -> None:
    from sagamesh.testing.samples import typical_event

    event = typical_event()
    json_size = len(SERIALIZERS["json"].encode(event))
    proto_size = len(SERIALIZERS["protobuf"].encode(event))
    assert proto_size <= 0.7 * json_size, (proto_size, json_size)
