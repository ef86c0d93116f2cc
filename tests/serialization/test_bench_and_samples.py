"""The benchmark helper returns sane rows; the samples are deterministic and sized as documented."""

from __future__ import annotations

import pytest

from sagamesh.errors import ConfigError
from sagamesh.serialization import get_serializer
from sagamesh.serialization.bench import BASELINE, BenchRow, StdlibJsonSerializer, measure, render
from sagamesh.testing.samples import SAMPLES, large_event, small_event, typical_event
from sagamesh.testing.strategies import saga_events


def test_measure_returns_a_row_per_serializer_and_size_plus_the_baseline() -> None:
    rows = measure(rounds=1, min_round_s=0.001)
    assert [(r.serializer, r.size_name) for r in rows] == [
        (name, size)
        for name in ("json", "protobuf", BASELINE)
        for size in ("small", "typical", "large")
    ]
    for row in rows:
        assert isinstance(row, BenchRow)
        assert row.encoded_bytes > 0
        assert 0 < row.encode_us < 100_000 and 0 < row.decode_us < 100_000
        assert row.total_us == pytest.approx(row.encode_us + row.decode_us)
    by = {(r.serializer, r.size_name): r for r in rows}
    for size in ("small", "typical"):
        assert by["protobuf", size].encoded_bytes < 0.7 * by["json", size].encoded_bytes
    assert by["json", "typical"].encoded_bytes == len(
        get_serializer("json").encode(typical_event())
    )
    assert by["json", "small"].encoded_bytes < by["json", "typical"].encoded_bytes
    assert by["json", "typical"].encoded_bytes < by["json", "large"].encoded_bytes


def test_measure_subsets_and_bad_arguments() -> None:
    rows = measure(["json"], ["small"], rounds=1, baseline=False, min_round_s=0.001)
    assert [(r.serializer, r.size_name) for r in rows] == [("json", "small")]
    with pytest.raises(ConfigError, match="huge") as caught:
        measure(sizes=["huge"], rounds=1)
    assert caught.value.field == "sizes"
    with pytest.raises(ConfigError) as caught:
        measure(["yaml"], rounds=1)
    assert caught.value.field == "serializer"
    with pytest.raises(ConfigError):
        measure(rounds=0)


def test_render_lists_every_row() -> None:
    rows = [BenchRow("json", "typical", 549, 1.25, 2.5)]
    table = render(rows)
    assert "json" in table and "549" in table and "3.75" in table
    assert len(table.splitlines()) == 2


def test_stdlib_baseline_round_trips_the_samples_and_the_seed_form() -> None:
    baseline = StdlibJsonSerializer()
    for make in SAMPLES.values():
        event = make()
        assert baseline.decode(baseline.encode(event)) == event
        # it writes the same wire form the msgspec serializer reads, and vice versa
        assert get_serializer("json").decode(baseline.encode(event)) == event
        assert baseline.decode(get_serializer("json").encode(event)) == event


def test_samples_are_deterministic_and_sized() -> None:
    json_s = get_serializer("json")
    for make in (small_event, typical_event, large_event):
        assert json_s.encode(make()) == json_s.encode(make())
    assert 100 <= len(json_s.encode(small_event())) <= 200
    assert 500 <= len(json_s.encode(typical_event())) <= 560  # "about 530 bytes"
    assert 9_500 <= len(json_s.encode(large_event())) <= 12_000  # about 10 KB of data
    assert typical_event().duration.total_seconds() > 0  # exercises the duration path


def test_strategies_draw_valid_events() -> None:
    from hypothesis import given, settings

    seen: list[int] = []

    @settings(max_examples=30, deadline=None)
    @given(event=saga_events())
    def check(event: object) -> None:
        seen.append(1)
        assert event.id and event.saga_id

    check()
    assert len(seen) >= 10
