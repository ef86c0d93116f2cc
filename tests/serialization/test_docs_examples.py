"""Every Python example in docs/serialization.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "serialization.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def test_the_doc_has_examples() -> None:
    assert len(EXAMPLES) >= 6


@pytest.mark.parametrize("source", EXAMPLES, ids=[f"example-{i}" for i in range(len(EXAMPLES))])
def test_example_runs(source: str, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(source, str(DOC), "exec"), {"__name__": "__doc_example__"})
    expected = re.findall(r"^# (invalid .*)$", source, flags=re.MULTILINE)
    if expected:  # examples that show their output in comments print exactly that
        assert capsys.readouterr().out.splitlines() == expected
