"""Shared pieces of the ``sagamesh`` operations commands: loading settings, reporting errors
the same way everywhere (red message, non-zero exit), running a coroutine."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from .settings import Settings

T = TypeVar("T")

# Exit codes: 1 = the operation failed, 2 = bad usage or configuration, 3 = a service is down.
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 3

CONFIG_OPTION = typer.Option(
    None, "--config", "-c", envvar="SAGAMESH_CONFIG", exists=False, dir_okay=False,
    help="Settings file (YAML); SAGAMESH_… environment variables override it. "
         "Without it: defaults plus the environment.")


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def fail(message: str, code: int = EXIT_FAILED, *, hint: str = "") -> NoReturn:
    err = console(stderr=True)
    err.print(f"[bold red]error:[/bold red] {message}", markup=True)
    if hint:
        err.print(f"[yellow]hint:[/yellow] {hint}")
    raise typer.Exit(code)


def load_settings(path: Path | None) -> Settings:
    """Settings from ``path`` (or defaults + environment); ConfigError → exit 2 with the text."""
    from .errors import ConfigError
    from .settings import Settings

    try:
        if path is None:
            return Settings.load({}, source="environment")
        return Settings.from_yaml(path)
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)


def source_of(path: Path | None) -> str:
    return str(path) if path is not None else "the environment"


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro``; typed sagamesh errors become a clear message and a non-zero exit."""
    from .errors import BrokerUnavailableError, ConfigError, SagameshError

    try:
        return asyncio.run(coro)
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)
    except BrokerUnavailableError as exc:
        fail(str(exc), EXIT_UNAVAILABLE)
    except (OSError, TimeoutError) as exc:
        fail(f"{type(exc).__name__}: {exc}", EXIT_UNAVAILABLE,
             hint="is the service in the settings running and reachable?")
    except SagameshError as exc:
        fail(f"{type(exc).__name__}: {exc}")


def debug() -> bool:
    return os.environ.get("SAGAMESH_DEBUG", "") not in ("", "0")
