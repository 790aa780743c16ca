"""What every benchmark harness shares: the row each figure reports, medians, the machine and
versions it ran on, and running a real deeprig train job to read back its per-epoch record.

Every figure is a ratio A / B of two things measured in the same run on the same machine
(A: deeprig or the thing under test, B: the baseline). Each side is measured `repeats` times
(interleaved, so drift in a shared machine's speed lands on both sides) and the median of
the repeats is quoted; the ratio is the ratio of the two medians.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Target:
    op: str  # "<=" or ">="
    value: float

    def met(self, ratio: float) -> bool | None:
        if ratio != ratio:  # NaN: not measured
            return None
        return ratio <= self.value if self.op == "<=" else ratio >= self.value

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}x"


@dataclass
class Row:
    figure: str  # the item, e.g. "1 train overhead"
    what: str  # the comparison, e.g. "synthetic-cnn, steady-state epoch"
    a_label: str  # what A is, with its unit
    a: float
    b_label: str
    b: float
    target: Target | None
    repeats: int
    note: str = ""
    ratio: float = field(init=False)

    def __post_init__(self) -> None:
        self.ratio = self.a / self.b if self.b and self.b == self.b else float("nan")

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self.ratio)


def failed_row(figure: str, error: BaseException) -> Row:
    """A harness that crashed still shows in the table, with the reason."""
    message = f"{type(error).__name__}: {error}".splitlines()[0][:160]
    return Row(figure, "FAILED", "-", float("nan"), "-", float("nan"), None, 0, message)


def median(values: Iterable[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def fmt(value: float | None) -> str:
    if value is None or value != value:
        return "n/a"
    if value == 0 or 0.01 <= abs(value) < 100_000:
        return f"{value:.4g}"
    return f"{value:.3g}"


def met_text(met: bool | None) -> str:
    return {True: "yes", False: "NO", None: "-"}[met]


COLUMNS = ("#", "comparison", "A (measured)", "B (measured)", "ratio A/B", "target", "met", "n")


def row_cells(row: Row) -> tuple[str, ...]:
    ratio = "n/a" if row.ratio != row.ratio else f"{row.ratio:.3f}x"
    return (
        row.figure,
        row.what,
        f"{row.a_label}: {fmt(row.a)}",
        f"{row.b_label}: {fmt(row.b)}",
        ratio,
        str(row.target) if row.target else "-",
        met_text(row.met),
        str(row.repeats),
    )


def rows_table(rows: list[Row], title: str) -> Table:
    table = Table(title=title, show_lines=False)
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("#", "comparison") else "right")
    for row in rows:
        style = "red" if row.met is False or row.what == "FAILED" else None
        table.add_row(*row_cells(row), style=style)
    return table


def make_console() -> Console:
    """Rich's default width off a terminal is 80 columns: too narrow for the table."""
    console = Console()
    return console if console.is_terminal else Console(width=180)


def print_rows(rows: list[Row], title: str, console: Console | None = None) -> None:
    console = console or make_console()
    console.print(rows_table(rows, title))
    for row in rows:
        if row.note:
            console.print(f"  [dim]{row.figure} / {row.what}: {row.note}[/]")


def rows_markdown(rows: list[Row]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(c) for c in row_cells(row)) + " |" for row in rows]
    notes = [f"- **{row.figure} / {row.what}**: {row.note}" for row in rows if row.note]
    return "\n".join(lines + ([""] + notes if notes else []))


# ---------------------------------------------------------------- where it ran


def machine() -> dict[str, str]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        import psutil

        ram = f"{psutil.virtual_memory().total / 2**30:.1f} GiB"
    except ImportError:
        ram = "unknown"
    return {
        "cpu": model,
        "cores": f"{usable} usable ({os.cpu_count()} online)",
        "ram": ram,
        "os": platform.platform(),
    }


def versions() -> dict[str, str]:
    import mlflow
    import ray
    import torch

    found = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "mlflow": mlflow.__version__,
    }
    try:
        import stable_baselines3

        found["stable-baselines3"] = stable_baselines3.__version__
    except ImportError:
        pass
    return found


class CpuSteal:
    """The share of this machine's CPU time its hypervisor gave to other guests while a
    harness ran (the `steal` column of /proc/stat, Linux). Above ~10% the figures are not
    this machine's: a 2-thread matmul measured 75 GFLOP/s at 42% steal against 183 at
    ~0%, and a side with more processes than the other loses more than its share."""

    def __init__(self) -> None:
        self._start = self._ticks()

    @staticmethod
    def _ticks() -> list[int] | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
        except (OSError, IndexError):
            return None
        return [int(f) for f in fields]

    def percent(self) -> float:
        end = self._ticks()
        if self._start is None or end is None:
            return float("nan")
        delta = [b - a for a, b in zip(self._start, end, strict=True)]
        total = sum(delta)
        return 100.0 * delta[7] / total if total else float("nan")


def now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def command() -> str:
    argv = " ".join([Path(sys.executable).name, *sys.argv])
    return f"make bench  ({argv})" if os.environ.get("MAKELEVEL") else argv


def warn_if_ray_would_join_a_cluster(console: Console) -> None:
    """`ray.init()` without an address joins the cluster a `ray start` left in
    /tmp/ray/ray_current_cluster; a benchmark must start its own local Ray."""
    if os.environ.get("RAY_ADDRESS") or Path("/tmp/ray/ray_current_cluster").exists():
        console.print(
            "[yellow]warning: RAY_ADDRESS or /tmp/ray/ray_current_cluster is set: deeprig's "
            "local Ray would join that cluster and the numbers would not be this machine's "
            "alone[/]"
        )


# ---------------------------------------------------------------- deeprig train runs


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    end: float  # wall-clock time rank 0's checkpoint for this epoch reached storage
    epoch_time_s: float  # deeprig's own in-loop metric (train + validation)
    samples_per_s: float  # deeprig's own metric: all ranks' training rows / train seconds
    metrics: dict[str, float]  # the epoch's whole report (memory, losses, ...)


@dataclass(frozen=True)
class DeeprigRun:
    total_s: float  # the train runner's wall time, whatever it includes (Ray start-up or not)
    epochs: list[EpochRecord]
    started: float  # wall clock when the train runner was called
    finished: float  # wall clock when it returned

    @property
    def before_first_epoch_s(self) -> float:
        """From the call to the end of epoch 1: checks, Ray start-up, MLflow run, worker
        group start, data, and epoch 1 itself."""
        return self.epochs[0].end - self.started

    @property
    def after_last_epoch_s(self) -> float:
        """From the last epoch's end to the return: fit's end, results and model logging,
        Ray shut-down."""
        return self.finished - self.epochs[-1].end

    def steady_gaps(self, warmup: int) -> list[float]:
        """Wall time between consecutive epoch ends, leaving out the first `warmup` epochs
        (epoch 1 holds the data pipeline's start): everything deeprig does per epoch."""
        ends = [e.end for e in self.epochs]
        gaps = [b - a for a, b in zip(ends, ends[1:], strict=False)]  # gaps[i] ends epoch i+2
        return gaps[max(warmup - 1, 0) :]

    def steady(self, metric: str, warmup: int) -> list[float]:
        return [getattr(e, metric) for e in self.epochs[warmup:]]


def run_deeprig_train(spec, home: Path, tag: str) -> DeeprigRun:
    """Run `spec` as `deeprig run` does (the train runner), with every epoch's checkpoint kept in a
    fresh folder; read the per-epoch record back from those checkpoints. The same reading
    works with MLflow tracking on or off, so both sides of a comparison are timed alike.

    Starts (and stops) a local Ray unless one is already up."""
    from deeprig.runners import Job, train
    from deeprig.training.state import TrainState

    storage = home / f"checkpoints-{tag}-{time.time_ns()}"
    spec = spec.model_copy(
        update={
            "checkpoint": spec.checkpoint.model_copy(
                update={
                    "storage": str(storage),
                    "every_n_epochs": 1,
                    "num_to_keep": spec.optim.num_epochs,
                }
            )
        }
    )
    started_at = time.time()
    started = time.perf_counter()
    train.run(spec, Job("(benchmark)", REPO / "bench.yaml", console=Console(quiet=True), home=home))
    total = time.perf_counter() - started
    finished_at = time.time()
    records = []
    for path in storage.rglob("checkpoint.pt"):
        state = TrainState.load(path.parent)
        if state.mid_epoch:  # (checkpoint.every_n_steps: only epochs' ends are timed)
            continue
        metrics = state.metrics
        records.append(
            EpochRecord(
                epoch=int(metrics["epoch"]),
                end=path.stat().st_mtime,
                epoch_time_s=float(metrics["epoch_time_s"]),
                samples_per_s=float(metrics["samples_per_s"]),
                metrics=dict(metrics),
            )
        )
    records.sort(key=lambda r: r.epoch)
    if [r.epoch for r in records] != list(range(1, spec.optim.num_epochs + 1)):
        raise RuntimeError(f"expected one checkpoint per epoch under {storage}, got {records}")
    return DeeprigRun(total, records, started_at, finished_at)


def add_epoch_options(parser, epochs: int = 5) -> None:
    """The options every epoch-timing harness takes: epochs, warm-up, repeats, --quick."""
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--warmup", type=int, default=2, help="epochs left out of the median")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smoke run, under a minute")
