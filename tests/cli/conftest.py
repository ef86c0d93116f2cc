"""Run the installed ``sagamesh`` command as a user would, and write settings files.

(No ``__init__.py`` here: tests/cli/ is on sys.path so the worker/saga fixture apps import as
top-level modules, like a user's ``module:attr``.)"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

SAGAMESH = Path(sys.executable).with_name("sagamesh")
HERE = Path(__file__).resolve().parent

Run = Callable[..., subprocess.CompletedProcess[str]]


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith("SAGAMESH_") or k.startswith("SAGAMESH_TEST")}
    return {**keep, "COLUMNS": "200", "NO_COLOR": "1", **(extra or {})}


@pytest.fixture
def sagamesh() -> Run:
    """``sagamesh(*args, env=..., timeout=...)`` → CompletedProcess (text)."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(SAGAMESH), *args], capture_output=True, text=True,
                              timeout=timeout, env=_env(env), cwd=HERE, input=input)

    return run


@pytest.fixture
def spawn() -> Callable[..., subprocess.Popen[str]]:
    """A long-running ``sagamesh`` process (the worker)."""
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        proc = subprocess.Popen([str(SAGAMESH), *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=_env(env), cwd=HERE)
        procs.append(proc)
        return proc

    yield start  # type: ignore[misc]
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[dict[str, Any]], Path]:
    def write(data: dict[str, Any], name: str = "settings.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        return path

    return write
