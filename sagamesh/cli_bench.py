"""``sagamesh bench serializers``: size, encode and decode time per serializer and sample
event, as a table (and a chart with ``--plot``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from .cli_common import EXIT_CONFIG, console, fail

if TYPE_CHECKING:
    from .serialization.bench import BenchRow

bench_app = typer.Typer(name="bench", help="Micro benchmarks.", no_args_is_help=True)

SAMPLES = ("small", "typical", "large")


def plot(results: list[BenchRow], path: Path) -> None:
    """Grouped bars: encode and decode µs per serializer for each sample, sizes annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = list(dict.fromkeys(m.size_name for m in results))
    names = list(dict.fromkeys(m.serializer for m in results))
    fig, axes = plt.subplots(1, len(samples), figsize=(4.5 * len(samples), 4), squeeze=False)
    width = 0.38
    for ax, sample in zip(axes[0], samples, strict=True):
        rows = [next(m for m in results if m.size_name == sample and m.serializer == n)
                for n in names]
        xs = range(len(rows))
        ax.bar([x - width / 2 for x in xs], [m.encode_us for m in rows], width, label="encode")
        ax.bar([x + width / 2 for x in xs], [m.decode_us for m in rows], width, label="decode")
        ax.set_xticks(list(xs), [f"{m.serializer}\n{m.encoded_bytes} B" for m in rows])
        ax.set_title(f"{sample} event")
        ax.set_ylabel("µs per event")
        ax.legend()
    fig.suptitle("sagamesh serializers (best of rounds)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@bench_app.command("serializers")
def serializers(
    min_round_ms: float = typer.Option(20.0, "--min-round-ms", "-m", min=0.1,
                                       help="Each timing round lasts at least this long."),
    rounds: int = typer.Option(5, "--rounds", "-r", min=1, help="Rounds (the best one counts)."),
    sample: list[str] = typer.Option(list(SAMPLES), "--sample", "-s",
                                     help="Sample event(s): small, typical, large."),
    serializer: list[str] = typer.Option([], "--serializer",
                                         help="Serializer(s) to measure (default: all)."),
    plot_path: Path | None = typer.Option(None, "--plot", dir_okay=False,
                                          help="Also draw a bar chart to this PNG file."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline",
                                  help="Add the stdlib-json baseline row."),
) -> None:
    """Measure every serializer on the sample events: wire size, encode and decode time."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table

    from .errors import SagameshError
    from .serialization import SERIALIZER_NAMES
    from .serialization.bench import BASELINE, measure

    names = serializer or list(SERIALIZER_NAMES)
    unknown = [n for n in names if n not in SERIALIZER_NAMES]
    if unknown:
        fail(f"unknown serializer(s) {', '.join(unknown)}; known: "
             f"{', '.join(SERIALIZER_NAMES)}", EXIT_CONFIG)
    bad = [s for s in sample if s not in SAMPLES]
    if bad:
        fail(f"unknown sample(s) {', '.join(bad)}; known: {', '.join(SAMPLES)}", EXIT_CONFIG)
    out = console()
    jobs = [(n, s) for s in sample for n in names]
    if baseline:
        jobs += [(BASELINE, s) for s in sample]
    results: list[BenchRow] = []
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   console=out, disable=not progress, transient=True)
    with bar:
        task = bar.add_task("measuring", total=len(jobs))
        for name, sample_name in jobs:
            bar.update(task, description=f"{name} / {sample_name}")
            try:
                results += measure([] if name == BASELINE else [name], [sample_name], rounds,
                                   baseline=name == BASELINE, min_round_s=min_round_ms / 1000)
            except SagameshError as exc:
                fail(str(exc))
            bar.advance(task)
    table = Table(title=f"Serializers (best of {rounds} rounds, CPU time per event)")
    for column, justify in (("serializer", "left"), ("event", "left"), ("size (B)", "right"),
                            ("encode (µs)", "right"), ("decode (µs)", "right"),
                            ("round trip (µs)", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for m in results:
        table.add_row(m.serializer, m.size_name, str(m.encoded_bytes), f"{m.encode_us:.2f}",
                      f"{m.decode_us:.2f}", f"{m.total_us:.2f}")
    out.print(table)
    if plot_path is not None:
        plot(results, plot_path)
        out.print(f"chart written to {plot_path}")
