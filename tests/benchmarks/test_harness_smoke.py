"""The throughput harness and the memory-peak script run end to end with tiny counts and write
results of the documented shape. Speed is never asserted here (that is benchmarks/' job)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

# benchmarks/ is not installed: import it from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import instructions, memory_peak
from benchmarks.throughput.__main__ import main, table
from benchmarks.throughput.core import RATIOS, Summary, paired_ratios, ratios

PUBLISH = {"publish.raw.single", "publish.raw.pipelined", "publish.sagamesh.single",
           "publish.sagamesh.batch"}
CONSUME = {"consume.raw.ack", "consume.sagamesh.consumer", "consume.sagamesh.consumer_unordered"}
FASTSTREAM = {"publish.faststream.single", "consume.faststream.ack"}
# Diagnostic raw cases of the real brokers, each run right after the case it refines.
DIAGNOSTIC = {"publish.raw.single_headers": "publish.raw.single",
              "publish.raw.pipelined_headers": "publish.sagamesh.batch",
              "consume.raw.decode": "consume.raw.ack"}
SUMMARY_KEYS = {"median", "min", "max", "q1", "q3", "rounds"}


def _check_broker(result: dict[str, object], expected: set[str], rounds: int) -> None:
    assert result["errors"] == {}
    cases = result["cases"]
    assert isinstance(cases, dict)
    assert set(cases) == expected
    for name, summary in cases.items():
        assert set(summary) == SUMMARY_KEYS, name
        assert len(summary["rounds"]) == rounds, name
        assert 0 < summary["min"] <= summary["q1"] <= summary["median"], name
        assert summary["median"] <= summary["q3"] <= summary["max"], name
    ratio_values = result["ratios"]
    assert isinstance(ratio_values, dict)
    for name, num, den, _ in RATIOS:
        if num in cases and den in cases:
            assert ratio_values[name] == pytest.approx(
                cases[num]["median"] / cases[den]["median"], rel=1e-2, abs=1e-3)
        else:
            assert name not in ratio_values
    paired = result["paired_ratios"]
    assert isinstance(paired, dict) and set(paired) == set(ratio_values)
    assert all(value > 0 for value in paired.values())


def test_harness_on_memory_and_nats_writes_the_documented_json(
        nats_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "result.json"
    code = main(["--brokers", "memory,nats", "--count", "40", "--rounds", "2", "--warmup", "10",
                 "--timeout", "60", "--out", str(out), "--quiet"])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["settings"]["count"] == 40
    assert report["settings"]["rounds"] == 2
    assert report["settings"]["payload_bytes"] > 400  # the typical event (~550 bytes)
    machine = report["machine"]
    assert machine["nproc"] >= 1 and machine["cpu_model"] and machine["python"].startswith("3.")
    assert machine["libraries"]["faststream"] and machine["libraries"]["nats-py"]
    assert list(report["brokers"]) == ["memory", "nats"]
    _check_broker(report["brokers"]["memory"], PUBLISH | CONSUME, rounds=2)
    nats_result = report["brokers"]["nats"]
    _check_broker(nats_result, PUBLISH | CONSUME | FASTSTREAM | set(DIAGNOSTIC), rounds=2)
    order = list(nats_result["cases"])  # in the order the cases ran
    for case, after in DIAGNOSTIC.items():
        assert order.index(case) == order.index(after) + 1, case
    assert {"single_vs_raw_same_headers", "consume_vs_raw_decode"} <= set(nats_result["ratios"])
    printed = capsys.readouterr().out
    assert "| publish.sagamesh.batch |" in printed and "batch_vs_raw_pipelined" in printed


def test_summary_and_ratios_use_medians() -> None:
    summary = Summary.of([5.0, 1.0, 4.0, 2.0, 3.0])
    assert (summary.median, summary.minimum, summary.maximum) == (3.0, 1.0, 5.0)
    assert (summary.q1, summary.q3) == (2.0, 4.0)
    assert summary.rounds == [5.0, 1.0, 4.0, 2.0, 3.0]  # in the order measured
    cases = {"publish.sagamesh.batch": Summary.of([90.0]),
             "publish.raw.pipelined": Summary.of([100.0]),
             "publish.faststream.single": Summary.of([30.0])}
    assert ratios(cases) == {"batch_vs_raw_pipelined": 0.9, "batch_vs_faststream": 3.0}


def test_paired_ratios_are_medians_of_per_round_ratios() -> None:
    # Rounds 2 and 3 were slow spells hitting one case each; pairing keeps the typical 0.9.
    cases = {"publish.sagamesh.batch": Summary.of([90.0, 18.0, 50.0]),
             "publish.raw.pipelined": Summary.of([100.0, 20.0, 100.0])}
    assert paired_ratios(cases) == {"batch_vs_raw_pipelined": 0.9}
    assert ratios(cases) == {"batch_vs_raw_pipelined": 0.5}


def test_table_marks_a_failed_case_with_its_error() -> None:
    report = {
        "targets": {name: {"numerator": n, "denominator": d, "target": t}
                    for name, n, d, t in RATIOS},
        "brokers": {"memory": {"cases": {"publish.raw.single": Summary.of([10.0]).as_dict()},
                               "errors": {"publish.sagamesh.single": "TimeoutError: x"},
                               "ratios": {}, "paired_ratios": {}}},
    }
    text = table(report)
    assert "| publish.raw.single | 10 (10-10) |" in text


def test_memory_peak_reports_checkpoints(tmp_path: Path) -> None:
    report = memory_peak.main(["--events", "3000", "--batch", "500",
                               "--out", str(tmp_path / "m.json")])
    assert report == 0
    data = json.loads((tmp_path / "m.json").read_text())
    assert data["published_count"] == 3000
    assert [row["events"] for row in data["checkpoints"]] == [3000]
    assert data["checkpoints"][0]["peak_rss_mib"] >= data["baseline"]["peak_rss_mib"] > 0


async def test_memory_peak_on_rabbitmq_routes_every_publish_into_a_bounded_queue(
        amqp_url: str, unique: str) -> None:
    """RabbitMQ drops what no queue is bound for; the run binds one keeping the newest
    ``keep`` messages, and deletes it afterwards."""
    import aio_pika
    from aiormq.exceptions import ChannelNotFoundEntity
    from sagamesh_rabbitmq import RabbitBroker

    from sagamesh.publishing import PublisherConfig, SagaEventPublisher
    from sagamesh.testing.samples import typical_event

    topic = f"bench.memory-peak.{unique}"
    queue_name = f"{topic}:memory-peak"
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        async with RabbitBroker(amqp_url, exchange=f"bench-{unique}") as broker:
            async with memory_peak._bounded_sink(broker, amqp_url, topic, keep=3):
                publisher = SagaEventPublisher(broker, PublisherConfig(topic_prefix=topic))
                await publisher.publish_batch([typical_event() for _ in range(5)])
                await publisher.close()
                queue = await channel.declare_queue(queue_name, passive=True)
                assert queue.declaration_result.message_count == 3
            await broker.delete_topology()
        channel = await connection.channel()
        with pytest.raises(ChannelNotFoundEntity):
            await channel.declare_queue(queue_name, passive=True)
    finally:
        await connection.close()


@pytest.mark.parametrize("stage", instructions.STAGES)
async def test_every_instruction_count_stage_handles_exactly_the_records_asked_for(
        stage: str) -> None:
    """What callgrind counts is the stage doing its whole job per record (the Kafka stages end
    only when the handler has seen every record)."""
    assert await asyncio.wait_for(instructions._run_stage(stage, 37), 10) == 37
