"""The ``sagamesh`` command line (placeholder until the CLI issue lands)."""

from __future__ import annotations


def main() -> None:
    raise SystemExit("sagamesh CLI is not built yet")
