"""Every complete program in docs/publishing.md runs (so the documentation stays true)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "publishing.md"
ALL_BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
# The only blocks that are not programs: the `Outbox` and `PublishStage` protocol signatures.
SIGNATURES = [b for b in ALL_BLOCKS if b.startswith("class ") and "(Protocol)" in b]
BLOCKS = [b for b in ALL_BLOCKS if b not in SIGNATURES]


def test_the_document_has_runnable_examples() -> None:
    assert len(SIGNATURES) == 2
    # quick start, ConfigError, reliability, batches, transaction forms, outbox, metrics,
    # errors, custom stage, FaultyBroker
    assert len(BLOCKS) == 10
    for code in BLOCKS:
        assert "asyncio.run(main())" in code or code.startswith("from sagamesh.errors"), code


@pytest.mark.parametrize("code", BLOCKS, ids=[f"example-{i}" for i in range(len(BLOCKS))])
def test_example_runs(code: str) -> None:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
