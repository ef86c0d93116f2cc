"""Every Python block in docs/consuming.md runs as a program (so the documentation stays true)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "consuming.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_the_document_has_runnable_examples() -> None:
    # quick start, class handler, REQUEUE/DISCARD, filters, routing strategies, settings,
    # DLQ recovery, DLQ purge, DLQ auto-retry, MessageProcessor
    assert len(BLOCKS) == 10


@pytest.mark.parametrize("code", BLOCKS, ids=[f"example-{i}" for i in range(len(BLOCKS))])
def test_example_runs(code: str) -> None:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
