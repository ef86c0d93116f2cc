"""pyproject's extras are the ones SPEC §1 names, and ``sagamesh[all]`` installs every one of
them but the development tools (the three broker adapters included)."""

from __future__ import annotations

import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
SPEC_EXTRAS = {"nats", "rabbitmq", "kafka", "redis", "postgres", "otel", "prometheus", "all",
               "dev"}


def _extras() -> dict[str, list[str]]:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    extras: dict[str, list[str]] = project["optional-dependencies"]
    return extras


def test_the_spec_extras_exist() -> None:
    assert SPEC_EXTRAS <= set(_extras())


def test_all_holds_every_runtime_extra() -> None:
    extras = _extras()
    runtime = SPEC_EXTRAS - {"all", "dev"}
    wanted = {req for name in runtime for req in extras[name]}
    assert wanted <= set(extras["all"])
    assert {"sagamesh-nats", "sagamesh-rabbitmq", "sagamesh-kafka"} <= set(extras["all"])
