"""Every complete program in docs/saga.md runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "saga.md"
PROGRAMS = [
    block
    for block in re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    if "asyncio.run(" in block
]


def test_the_doc_has_programs() -> None:
    assert len(PROGRAMS) >= 9


@pytest.mark.parametrize("index", range(len(PROGRAMS)))
def test_doc_program_runs(index: int) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROGRAMS[index]], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
