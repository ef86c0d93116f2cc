"""docs/brokers.md stays true: its programs run, and its conformance example runs under pytest."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

DOC = Path(__file__).resolve().parents[2] / "docs" / "brokers.md"
TEXT = DOC.read_text()
PROGRAMS = re.findall(r"```python\n(.*?)```", TEXT, re.S)
SUITE_EXAMPLE = re.findall(r"```py\n(.*?)```", TEXT, re.S)


def test_the_document_has_its_examples() -> None:
    assert len(PROGRAMS) == 2 and len(SUITE_EXAMPLE) == 1


def _env(nats_url: str) -> dict[str, str]:
    return {**os.environ, "NATS_URL": nats_url}


def test_memory_program_runs() -> None:
    done = subprocess.run([sys.executable, "-c", PROGRAMS[0]], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "evt-1 1 b'{\"ok\": true}'" in done.stdout


@pytest.mark.nats
def test_nats_program_runs(nats_url: str) -> None:
    done = subprocess.run([sys.executable, "-c", PROGRAMS[1]], capture_output=True, text=True,
                          timeout=60, env=_env(nats_url))
    assert done.returncode == 0, done.stderr
    assert "attempt 2 order-1" in done.stdout


@pytest_asyncio.fixture
async def new_default_streams(nats_url: str) -> AsyncIterator[None]:
    """The example uses the default stream prefix: delete the streams it created."""
    import nats

    async def names() -> set[str]:
        nc = await nats.connect(nats_url)
        try:
            return {i.config.name for i in await nc.jsm().streams_info()
                    if i.config.name.startswith("SAGAMESH_conformance_")}
        finally:
            await nc.close()

    before = await names()
    yield
    created = await names() - before
    nc = await nats.connect(nats_url)
    try:
        for name in created:
            await nc.jsm().delete_stream(name)
    finally:
        await nc.close()


@pytest.mark.nats
@pytest.mark.usefixtures("new_default_streams")
def test_conformance_example_runs_under_pytest(nats_url: str, tmp_path: Path) -> None:
    module = tmp_path / "test_my_adapter_conformance.py"
    module.write_text(SUITE_EXAMPLE[0])
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(module), "-q", "-p", "no:cacheprovider", "-rs",
         "-k", "capabilities or keeps_id or restarts or transaction", "--rootdir", str(tmp_path),
         "-o", "asyncio_mode=auto"],
        capture_output=True, text=True, timeout=240, env=_env(nats_url), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed, 1 skipped" in done.stdout, done.stdout
    assert "capability native_transactions=False excludes this case" in done.stdout
