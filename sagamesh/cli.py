"""The ``sagamesh`` command line (typer + rich)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from rich.table import Table

    from .demo import DemoReport

app = typer.Typer(
    name="sagamesh",
    help="Saga orchestration over real message brokers.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """sagamesh: saga-based distributed transactions over NATS, RabbitMQ, Kafka or memory."""


@app.command()
def demo(
    count: int = typer.Option(1000, "--count", "-n", min=1, help="How many order sagas to run."),
    broker: str = typer.Option("memory://", "--broker", help="Broker URL for the saga events."),
    failure_rate: float = typer.Option(
        0.1, "--failure-rate", min=0.0, max=1.0, help="Share of payments declined."
    ),
    transient_rate: float = typer.Option(
        0.05, "--transient-rate", min=0.0, max=1.0,
        help="Share of inventory calls failing transiently (retried).",
    ),
    concurrency: int = typer.Option(200, "--concurrency", min=1, help="Sagas in flight at once."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed (reproducible runs)."),
    topic_prefix: str = typer.Option("saga.events", "--topic-prefix", help="Event topic."),
    group: str = typer.Option("sagamesh-demo", "--group", help="Consumer group counting events."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Live progress bar."),
) -> None:
    """Run the order-processing saga (create order → reserve inventory → process payment →
    confirm order) COUNT times and summarise the outcomes."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .demo import run_demo
    from .saga.state import SagaInstance

    console = Console()
    console.print(
        f"[bold]sagamesh demo[/bold]: {count} order sagas on [cyan]{broker}[/cyan], "
        f"payment failure rate {failure_rate:.0%}"
    )
    bar = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not progress,
    )
    tally = {"completed": 0, "compensated": 0, "other": 0}
    task = bar.add_task("sagas", total=count)

    def finished(instance: SagaInstance) -> None:
        key = instance.state.value if instance.state.value in tally else "other"
        tally[key] += 1
        bar.update(
            task,
            advance=1,
            description=(
                f"[green]{tally['completed']} completed[/green] "
                f"[yellow]{tally['compensated']} compensated[/yellow] "
                f"[red]{tally['other']} failed[/red]"
            ),
        )

    with bar:
        report = asyncio.run(
            run_demo(
                count,
                broker_url=broker,
                failure_rate=failure_rate,
                transient_failure_rate=transient_rate,
                concurrency=concurrency,
                seed=seed,
                topic_prefix=topic_prefix,
                group=group,
                on_finished=finished,
            )
        )
    console.print(_summary(report))
    consumed = report.events_consumed
    consumed_ok = consumed is None or consumed == report.events_published
    if sum(report.outcomes.values()) != count or not consumed_ok:
        raise typer.Exit(code=1)


def _summary(report: DemoReport) -> Table:
    from rich.table import Table

    ok = ("completed", "compensated")
    failed = sum(n for state, n in report.outcomes.items() if state not in ok)
    table = Table(title="Order sagas", show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("sagas", str(report.count))
    table.add_row("completed", str(report.outcomes.get("completed", 0)))
    table.add_row("compensated", str(report.outcomes.get("compensated", 0)))
    table.add_row("failed", str(failed))
    table.add_row("step retries", str(report.step_retries))
    table.add_row("p50 saga duration", f"{report.percentile(50) * 1000:.1f} ms")
    table.add_row("p99 saga duration", f"{report.percentile(99) * 1000:.1f} ms")
    table.add_row("events published", str(report.events_published))
    if report.events_consumed is not None:
        table.add_row("events consumed", str(report.events_consumed))
    table.add_row("elapsed", f"{report.elapsed:.2f} s")
    table.add_row("throughput", f"{report.sagas_per_second:,.0f} sagas/s")
    table.add_row("publisher", report.publisher)
    return table


def main() -> None:
    app()


# The operations commands (worker, config, bench, dlq, sagas) live in cli_ops.
from .cli_ops import register as _register_ops  # noqa: E402

_register_ops(app)
