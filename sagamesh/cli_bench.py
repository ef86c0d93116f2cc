"""``sagamesh bench serializers``: size, encode and decode time per serializer and sample
event, as a table (and a chart with ``--plot``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import typer

from .cli_common import EXIT_CONFIG, console, fail

bench_app = typer.Typer(name="bench", help="Micro benchmarks.", no_args_is_help=True)

SAMPLES = ("small", "typical", "large")


@dataclass(frozen=True, slots=True)
class Measurement:
    serializer: str
    sample: str
    size: int  # bytes
    encode_us: float  # best round, microseconds per event
    decode_us: float

    @property
    def roundtrip_us(self) -> float:
        return self.encode_us + self.decode_us


def sample_event(name: str) -> object:
    from .testing import samples

    return {"small": samples.small_event, "typical": samples.typical_event,
            "large": samples.large_event}[name]()


def measure(serializer: str, sample: str = "typical", *, number: int = 2000,
            rounds: int = 5) -> Measurement:
    """Best-of-``rounds`` time per encode and per decode over ``number`` calls each; checks
    the round trip is exact first (a serializer that loses data is not worth timing)."""
    from .events import SagaEvent
    from .serialization import get_serializer

    codec = get_serializer(serializer)
    event = sample_event(sample)
    assert isinstance(event, SagaEvent)
    encode, decode = codec.encode, codec.decode
    body = encode(event)
    if decode(body) != event:
        raise ValueError(f"{serializer} does not round-trip the {sample} event exactly")
    per_call = 1_000_000 / number
    best_encode = best_decode = float("inf")
    clock = time.perf_counter
    for _ in range(rounds):
        started = clock()
        for _ in range(number):
            encode(event)
        best_encode = min(best_encode, (clock() - started) * per_call)
        started = clock()
        for _ in range(number):
            decode(body)
        best_decode = min(best_decode, (clock() - started) * per_call)
    return Measurement(serializer, sample, len(body), best_encode, best_decode)


def plot(results: list[Measurement], path: Path) -> None:
    """Grouped bars: encode and decode µs per serializer for each sample, sizes annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = list(dict.fromkeys(m.sample for m in results))
    names = list(dict.fromkeys(m.serializer for m in results))
    fig, axes = plt.subplots(1, len(samples), figsize=(4.5 * len(samples), 4), squeeze=False)
    width = 0.38
    for ax, sample in zip(axes[0], samples, strict=True):
        rows = [next(m for m in results if m.sample == sample and m.serializer == n)
                for n in names]
        xs = range(len(rows))
        ax.bar([x - width / 2 for x in xs], [m.encode_us for m in rows], width, label="encode")
        ax.bar([x + width / 2 for x in xs], [m.decode_us for m in rows], width, label="decode")
        ax.set_xticks(list(xs), [f"{m.serializer}\n{m.size} B" for m in rows])
        ax.set_title(f"{sample} event")
        ax.set_ylabel("µs per event")
        ax.legend()
    fig.suptitle("sagamesh serializers (best of rounds)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@bench_app.command("serializers")
def serializers(
    number: int = typer.Option(2000, "--number", "-n", min=1,
                               help="Calls per round for each timing."),
    rounds: int = typer.Option(5, "--rounds", "-r", min=1, help="Rounds (the best one counts)."),
    sample: list[str] = typer.Option(list(SAMPLES), "--sample", "-s",
                                     help="Sample event(s): small, typical, large."),
    serializer: list[str] = typer.Option([], "--serializer",
                                         help="Serializer(s) to measure (default: all)."),
    plot_path: Path | None = typer.Option(None, "--plot", dir_okay=False,
                                          help="Also draw a bar chart to this PNG file."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
) -> None:
    """Measure every serializer on the sample events: wire size, encode and decode time."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table

    from .serialization import SERIALIZER_NAMES

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
    results: list[Measurement] = []
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   console=out, disable=not progress, transient=True)
    with bar:
        task = bar.add_task("measuring", total=len(jobs))
        for name, sample_name in jobs:
            bar.update(task, description=f"{name} / {sample_name}")
            try:
                results.append(measure(name, sample_name, number=number, rounds=rounds))
            except ValueError as exc:
                fail(str(exc))
            bar.advance(task)
    table = Table(title=f"Serializers (best of {rounds} rounds of {number} calls)")
    for column, justify in (("serializer", "left"), ("event", "left"), ("size (B)", "right"),
                            ("encode (µs)", "right"), ("decode (µs)", "right"),
                            ("round trip (µs)", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for m in results:
        table.add_row(m.serializer, m.sample, str(m.size), f"{m.encode_us:.2f}",
                      f"{m.decode_us:.2f}", f"{m.roundtrip_us:.2f}")
    out.print(table)
    if plot_path is not None:
        plot(results, plot_path)
        out.print(f"chart written to {plot_path}")
