"""The operations commands of ``sagamesh``: ``worker``, ``config check``, ``bench``, ``dlq``,
``sagas``. :func:`register` adds them to the main typer app (``sagamesh/cli.py``)."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import typer

from .cli_common import (
    CONFIG_OPTION,
    EXIT_CONFIG,
    console,
    fail,
    load_settings,
    run,
    source_of,
)

config_app = typer.Typer(name="config", help="Validate and show settings files.",
                         no_args_is_help=True)


@config_app.command("check")
def config_check(
    file: Path = typer.Argument(..., help="The settings file (YAML) to validate."),
    connect: bool = typer.Option(False, "--connect",
                                 help="Also connect to the configured broker."),
    as_json: bool = typer.Option(False, "--json", help="Print the settings as JSON."),
) -> None:
    """Validate FILE (plus SAGAMESH_… environment overrides) and print the effective settings
    with secrets masked. Exit code 2 and the error (file, field, fix) when it is invalid."""
    settings = load_settings(file)
    redacted = settings.redacted()
    out = console()
    if as_json:
        out.print_json(json.dumps(redacted))
    else:
        import yaml
        from rich.syntax import Syntax

        out.print(f"[green]✓[/green] {file} is valid "
                  f"({settings.broker.type} broker, {settings.storage.type} storage)")
        out.print(Syntax(yaml.safe_dump(redacted, sort_keys=False), "yaml",
                         background_color="default"))
    if connect:
        from .errors import ConfigError

        try:
            settings.broker.broker_url()
        except ConfigError as exc:
            fail(str(exc), EXIT_CONFIG)
        run(_try_connect(settings, str(file)))
        out.print(f"[green]✓[/green] connected to {settings.broker.display_url()}")


async def _try_connect(settings: object, source: str) -> None:
    from . import factories
    from .settings import Settings

    assert isinstance(settings, Settings)
    broker = factories.create_broker(settings)
    await factories.connect_broker(broker, settings, source=source)
    await broker.close()


def worker(
    app: str | None = typer.Argument(
        None, metavar="[APP]",
        help="'module:attr': an EventRouter, SagaDefinition(s), a WorkerApp, or a function "
             "returning one. Default: the settings' `app` (SAGAMESH_APP)."),
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Run consumers and the saga coordinator of APP with the settings of --config until
    SIGTERM or Ctrl-C, then shut down gracefully (in-flight work drains)."""
    from .worker import load_app

    settings = load_settings(config)
    from .errors import ConfigError

    if app is None:
        app = settings.app
    if not app:
        fail(f"no app to run: give APP ('module:attr') or set `app` in {source_of(config)} "
             "(field 'app', env SAGAMESH_APP)", EXIT_CONFIG)
    try:
        worker_app = load_app(app)
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)
    if worker_app.router is None and not worker_app.definitions:
        fail(f"{app} has no handlers and no saga definitions: nothing to run", EXIT_CONFIG)
    run(_run_worker(settings, worker_app, source_of(config)))


async def _run_worker(settings: object, app: object, source: str) -> None:
    from .settings import Settings
    from .worker import Worker, WorkerApp, describe

    assert isinstance(settings, Settings) and isinstance(app, WorkerApp)
    out = console()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    worker = Worker(settings, app, source=source)
    try:
        async with worker:
            out.print("[bold]sagamesh worker[/bold] started")
            for what, detail in describe(worker):
                out.print(f"  {what:<10} {detail}")
            out.print("ready", highlight=False)
            await stop.wait()
            out.print("stopping (draining in-flight work)…")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    out.print("stopped")


def register(app: typer.Typer) -> None:
    """Add the operations commands to the main ``sagamesh`` app."""
    from .cli_bench import bench_app
    from .cli_dlq import dlq_app
    from .cli_sagas import sagas_app

    app.command("worker")(worker)
    app.add_typer(config_app)
    app.add_typer(bench_app)
    app.add_typer(dlq_app)
    app.add_typer(sagas_app)
