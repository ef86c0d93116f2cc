"""`sagamesh demo` as a user runs it: the installed command, its summary table, its exit code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SAGAMESH = Path(sys.executable).with_name("sagamesh")


def _run(*args: str) -> tuple[dict[str, str], str]:
    proc = subprocess.run(
        [str(SAGAMESH), "demo", "--no-progress", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "120", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = dict(re.findall(r"│ ([a-z0-9 ]+?)\s+│\s+(.+?) │", proc.stdout))
    return rows, proc.stdout


def test_demo_runs_sagas_with_compensations_and_counts_every_event() -> None:
    rows, _ = _run("--count", "50", "--failure-rate", "0.5", "--seed", "7")
    completed, compensated = int(rows["completed"]), int(rows["compensated"])
    assert int(rows["sagas"]) == 50
    assert completed + compensated + int(rows["failed"]) == 50
    assert compensated > 5 and completed > 5  # half the payments are declined
    assert int(rows["failed"]) == 0
    assert int(rows["events published"]) == int(rows["events consumed"]) > 50 * 10 - 1
    p50 = float(rows["p50 saga duration"].removesuffix(" ms"))
    p99 = float(rows["p99 saga duration"].removesuffix(" ms"))
    assert 0 < p50 <= p99
    assert rows["publisher"] == "SagaEventPublisher"


@pytest.mark.parametrize(
    ("rate", "completed", "compensated", "events"),
    [("0", 20, 0, 20 * 10), ("1", 0, 20, 20 * 14)],
)
def test_failure_rate_extremes_give_exact_outcomes_and_event_counts(
    rate: str, completed: int, compensated: int, events: int
) -> None:
    rows, _ = _run("--count", "20", "--failure-rate", rate, "--transient-rate", "0")
    assert (int(rows["completed"]), int(rows["compensated"])) == (completed, compensated)
    # a completed saga emits 10 events (started, 4 x step started/completed, completed); one
    # declined at payment emits 14 (… step failed, compensation started, 2 x 2 undo, completed,
    # saga failed)
    assert int(rows["events published"]) == int(rows["events consumed"]) == events


def test_demo_help_lists_the_options() -> None:
    proc = subprocess.run(
        [str(SAGAMESH), "demo", "--help"], capture_output=True, text=True, timeout=60,
        env={"COLUMNS": "120", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0
    for option in ("--count", "--broker", "--failure-rate"):
        assert option in proc.stdout


def test_demo_over_nats_jetstream(nats_url: str, unique: str) -> None:
    rows, _ = _run(
        "--count", "30", "--broker", nats_url, "--failure-rate", "0.3", "--seed", "5",
        "--topic-prefix", f"demo-{unique}", "--group", f"demo-{unique}",
    )
    assert int(rows["completed"]) + int(rows["compensated"]) == 30
    assert int(rows["events published"]) == int(rows["events consumed"]) >= 30 * 10
