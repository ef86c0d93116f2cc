"""Every complete program in docs/operations.md runs, and its metric table names every metric."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from sagamesh.observability.metrics import METRIC_NAMES

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "operations.md"
TEXT = DOC.read_text(encoding="utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, re.S)


def test_the_document_has_an_example_per_topic() -> None:
    assert len(BLOCKS) == 5  # settings, worker/factories, FastStream, tracing, metrics


@pytest.mark.parametrize("code", BLOCKS, ids=["settings", "worker", "faststream", "tracing",
                                              "metrics"][:len(BLOCKS)])
def test_example_runs(code: str) -> None:
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=90, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_metric_is_documented() -> None:
    for name in METRIC_NAMES:
        assert f"`sagamesh_{name}`" in TEXT, name
