"""``sagamesh sagas list|show|cancel``: sagas in the configured storage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from .cli_common import (
    CONFIG_OPTION,
    EXIT_CONFIG,
    EXIT_FAILED,
    console,
    fail,
    load_settings,
    run,
    source_of,
)

if TYPE_CHECKING:
    from .saga import SagaInstance, StepState
    from .settings import Settings

sagas_app = typer.Typer(name="sagas", help="List, inspect and cancel sagas in storage.",
                        no_args_is_help=True)


def _when(value: Any) -> str:
    return value.isoformat(timespec="seconds") if value is not None else ""


def _row(saga: SagaInstance) -> dict[str, Any]:
    return {"id": saga.id, "definition": saga.definition_id, "state": saga.state.value,
            "step": f"{saga.completed_steps}/{saga.total_steps}",
            "created": _when(saga.created_at), "updated": _when(saga.updated_at),
            "lease_owner": saga.lease_owner or "",
            "error": saga.error.message if saga.error is not None else ""}


@sagas_app.command("list")
def sagas_list(
    config: Path | None = CONFIG_OPTION,
    state: list[str] = typer.Option([], "--state", help="Only these states (repeatable)."),
    definition: str | None = typer.Option(None, "--definition", help="Only this definition."),
    limit: int = typer.Option(100, "--limit", min=1, help="At most this many."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """List the active (non-terminal) sagas, oldest first."""
    from .saga import SagaFilter, SagaState

    settings = load_settings(config)
    try:
        states = frozenset(SagaState(s) for s in state) or None
    except ValueError:
        fail(f"unknown state in {state}; states: {', '.join(s.value for s in SagaState)}",
             EXIT_CONFIG)
    query = SagaFilter(states=states, definition_id=definition, limit=limit)

    async def go() -> list[SagaInstance]:
        from . import factories

        storage = factories.create_storage(settings)
        try:
            return await storage.get_active_sagas(query)
        finally:
            await storage.close()

    found = run(go())
    out = console()
    if as_json:
        for saga in found:
            typer.echo(json.dumps(_row(saga), default=str))
        return
    from rich.table import Table

    table = Table(title=f"Active sagas in {settings.storage.type} storage ({len(found)})")
    for column in ("id", "definition", "state", "steps done", "updated", "lease owner"):
        table.add_column(column, overflow="fold")
    for saga in found:
        row = _row(saga)
        table.add_row(row["id"], row["definition"], row["state"], row["step"], row["updated"],
                      row["lease_owner"])
    out.print(table)


@sagas_app.command("show")
def sagas_show(
    saga_id: str = typer.Argument(..., help="The saga id."),
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Show one saga (state, data, error, timings) and its steps."""
    settings = load_settings(config)

    async def go() -> tuple[SagaInstance | None, list[StepState]]:
        from . import factories

        storage = factories.create_storage(settings)
        try:
            saga = await storage.get_saga(saga_id)
            steps = list(await storage.get_step_states(saga_id)) if saga is not None else []
            return saga, steps
        finally:
            await storage.close()

    saga, steps = run(go())
    if saga is None:
        fail(f"no saga {saga_id!r} in {settings.storage.type} storage",
             hint="`sagamesh sagas list` shows the active ones")
    import msgspec

    detail = {**_row(saga), "data": saga.data, "result": saga.result,
              "error": msgspec.to_builtins(saga.error) if saga.error is not None else None,
              "start_time": _when(saga.start_time), "end_time": _when(saga.end_time),
              "version": saga.version, "metadata": saga.metadata,
              "steps": [{"step": s.step_id, "index": s.step_index, "status": s.status.value,
                         "attempt": s.attempt, "started": _when(s.started_at),
                         "completed": _when(s.completed_at),
                         "error": s.error.message if s.error is not None else ""}
                        for s in sorted(steps, key=lambda s: s.step_index)]}
    console().print_json(json.dumps(detail, default=str))


@sagas_app.command("cancel")
def sagas_cancel(
    saga_id: str = typer.Argument(..., help="The saga id."),
    app: str = typer.Option(..., "--app", metavar="APP",
                            help="'module:attr' with the saga's definition (its compensations "
                                 "run here)."),
    config: Path | None = CONFIG_OPTION,
    reason: str = typer.Option("cancelled from the CLI", "--reason", help="Why (stored)."),
    timeout: float = typer.Option(60.0, "--timeout", min=0.1,
                                  help="How long to wait for the compensations."),
) -> None:
    """Cancel a saga: its completed steps are compensated and it ends CANCELLED. A saga a live
    worker is driving cannot be taken over (stop that worker, or wait for its lease)."""
    from .errors import ConfigError
    from .worker import load_app

    settings = load_settings(config)
    try:
        definitions = load_app(app).definitions
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)
    final, ended_before = run(_cancel(settings, definitions, saga_id, reason, timeout,
                                      source_of(config)))
    if final is None:
        fail(f"no saga {saga_id!r} in {settings.storage.type} storage")
    state = final.state.value
    if ended_before:
        if state == "cancelled":
            console().print(f"saga {saga_id} was already cancelled")
            return
        fail(f"saga {saga_id} had already ended {state}; nothing to cancel", EXIT_FAILED)
    console().print(f"saga {saga_id}: [bold]{state}[/bold]")
    if state != "cancelled":
        fail(f"saga {saga_id} did not finish cancelling within {timeout:g}s (now {state})",
             EXIT_FAILED)


async def _cancel(settings: Settings, definitions: Any, saga_id: str, reason: str,
                  wait_for: float, source: str) -> tuple[SagaInstance | None, bool]:
    from . import factories
    from .errors import LeaseError, SagaDefinitionError, SagaNotFoundError

    storage = factories.create_storage(settings)
    broker = factories.create_broker(settings)
    try:
        await factories.connect_broker(broker, settings, source=source)
        publisher = factories.create_publisher(broker, settings)
        coordinator = factories.create_coordinator(settings, storage, publisher,
                                                   definitions=definitions)
        try:
            stored = await storage.get_saga(saga_id)
            if stored is None:
                return None, False
            if stored.is_terminal:
                return stored, True
            try:
                await coordinator.cancel_saga(saga_id, reason)
            except SagaNotFoundError:
                return None, False
            except SagaDefinitionError as exc:
                fail(f"{exc}; pass the APP that defines it with --app", EXIT_CONFIG)
            except LeaseError as exc:
                fail(str(exc), EXIT_FAILED,
                     hint="a live worker drives this saga: stop it (its lease is released on "
                          "shutdown) or wait for the lease to expire, then retry")
            try:
                return await coordinator.wait_for_completion(saga_id, timeout=wait_for), False
            except TimeoutError:
                return await storage.get_saga(saga_id), False
        finally:
            await coordinator.close()
            await publisher.close()
    finally:
        await broker.close()
        await storage.close()
