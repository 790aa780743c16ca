"""Search benchmarks, measured in one run on this machine:

1. Overhead: 16 trials of a trivial ~1-second trial. The theoretical minimum is the sum of
   the trials' own training time (the same training measured in a plain loop here, no
   Ray) divided by the trials that fit at once; actual is deeprig's wall time for the
   search (Ray already up). Target (issue 15): at most 1.5x.
   Beside it, the raw-Tune floor (benchmarks/floors/raw_tune.py): the same trials under a
   bare `tune.Tuner`, which is what Tune itself costs here.
2. Early stopping: jobs/tune_digits_cnn_asha.yaml under ASHA and the same search (same
   seeded Optuna sampler) under FIFO: epochs trained, wall time, best val_accuracy.
   Target: ASHA trains at most half the epochs of FIFO.

    python benchmarks/search.py                 # both, ~8 minutes on 2 CPUs
    python benchmarks/search.py --only overhead
    python benchmarks/search.py --quick         # smoke: overhead of 4 trials, < 1 minute

`make bench` runs a smaller search (rows(): 8 trivial trials, ASHA/FIFO over 8 samples).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from deeprig.spec import load_spec, load_spec_text
from floors.raw_tune import run_floor, train_trivial
from harness import Row, Target, fmt, make_console, print_rows
from rich.console import Console
from rich.table import Table

FIGURE = "5 search"

REPO = Path(__file__).resolve().parents[1]

TRIVIAL = """
name: overhead
kind: tune
base:
  name: trivial-trial
  kind: train
  model: {name: mlp, hidden: [32]}
  data: {source: "builtin:synthetic", num_samples: 60000, shape: [16], num_classes: 4}
  optim: {batch_size: 64, num_epochs: 3}
  scaling: {num_workers: 1}
  checkpoint: {every_n_epochs: 3}
search_space:
  optim.lr: {loguniform: [0.001, 0.01]}
search: {algorithm: random, metric: val_loss, mode: min, num_samples: 16, seed: 0}
scheduler: {name: fifo}
tracking: {experiment: bench-overhead, enabled: false}
"""


def plain_trial_seconds(spec, repeats: int = 3) -> float:
    """The trial's training alone, in this process: what a trial cannot do without."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        train_trivial(spec.base)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def tune_check(spec):
    from deeprig.cluster.resources import connected_resources
    from deeprig.runners import tune

    return tune.check(spec, connected_resources())


def run_search(spec, home: Path):
    from deeprig.runners import Job, tune

    checked = tune_check(spec)
    outcome = tune.run(
        spec, Job("(benchmark)", REPO / "bench.yaml", console=Console(quiet=True), home=home)
    )
    return outcome, checked


def measure(
    only: str | None = None,
    trials: int | None = None,
    tracking: tuple[str, ...] = ("true", "false"),
    asha_samples: int | None = None,
    console: Console | None = None,
):
    """Run the searches; returns (overhead rows, ASHA/FIFO rows) as raw tuples."""
    from deeprig.cluster.session import ray_session

    console = console or Console()
    rows_overhead, rows_asha = [], []
    with tempfile.TemporaryDirectory() as tmp, ray_session():
        home = Path(tmp)
        if only in (None, "overhead"):
            console.print("  search overhead: one trial in a plain loop")
            trial = plain_trial_seconds(load_spec_text(TRIVIAL))
            extra = [f"search.num_samples={trials}"] if trials else []
            floor_spec = load_spec_text(TRIVIAL, extra)
            floor_checks = tune_check(floor_spec)
            console.print("  search overhead: the raw-Tune floor (same trials, bare Tuner)")
            floor = run_floor(
                floor_spec.base.model_dump(mode="json"),
                floor_spec.search.num_samples,
                floor_checks.concurrency,
                floor_checks.trial_resources,
            )
            for flag in tracking:
                console.print(f"  search overhead: deeprig search, tracking {flag}")
                spec = load_spec_text(TRIVIAL, [f"tracking.enabled={flag}", *extra])
                outcome, checks = run_search(spec, home)
                ideal = spec.search.num_samples * trial / checks.concurrency
                row = (flag, spec.search.num_samples, checks.concurrency, trial, ideal)
                rows_overhead.append((*row, floor, outcome.seconds))
        if only in (None, "asha"):
            job = REPO / "jobs/tune_digits_cnn_asha.yaml"
            extra = [f"search.num_samples={asha_samples}"] if asha_samples else []
            for scheduler in ("asha", "fifo"):
                console.print(f"  {job.name}: {scheduler}")
                spec = load_spec(
                    job,
                    [
                        f"scheduler.name={scheduler}",
                        f"tracking.experiment=bench-{scheduler}",
                        *extra,
                    ],
                )
                outcome, _ = run_search(spec, home)
                rows_asha.append((scheduler, outcome))
    return rows_overhead, rows_asha


def search_rows(
    only: str | None = None,
    trials: int | None = None,
    tracking: tuple[str, ...] = ("true", "false"),
    asha_samples: int | None = None,
    console: Console | None = None,
) -> list[Row]:
    rows_overhead, rows_asha = measure(only, trials, tracking, asha_samples, console)
    rows = []
    for flag, n, conc, trial, ideal, floor, wall in rows_overhead:
        on = "on" if flag == "true" else "off"
        rows.append(
            Row(
                FIGURE,
                f"{n} trivial trials, tracking {on}: wall vs theoretical minimum",
                "deeprig wall s",
                wall,
                "theoretical min s",
                ideal,
                Target("<=", 1.5),
                1,
                f"one trial's training in a plain loop {trial:.2f} s (median of 3); "
                f"{conc} trial(s) at once; Ray already up",
            )
        )
        rows.append(
            Row(
                FIGURE,
                f"{n} trivial trials, tracking {on}: wall vs the raw-Tune floor",
                "deeprig wall s",
                wall,
                "raw Tune s",
                floor,
                None,
                1,
                "floor: the same trials as plain loops under a bare tune.Tuner with actor "
                "reuse (benchmarks/floors/raw_tune.py): Tune's own cost on this machine",
            )
        )
    if rows_asha:
        by = dict(rows_asha)
        asha, fifo = by["asha"], by["fifo"]
        rows.append(
            Row(
                FIGURE,
                f"tune_digits_cnn_asha.yaml ({asha.num_trials} trials): ASHA vs FIFO, epochs",
                "ASHA epochs",
                asha.total_epochs,
                "FIFO epochs",
                fifo.total_epochs,
                Target("<=", 0.5),
                1,
                f"same seeded Optuna sampler; best val_accuracy ASHA {fmt(asha.best_metric)}, "
                f"FIFO {fmt(fifo.best_metric)}; wall ASHA {asha.seconds:.1f} s, "
                f"FIFO {fifo.seconds:.1f} s; {asha.num_stopped_early} trials stopped early",
            )
        )
    return rows


def rows(quick: bool = False, console: Console | None = None) -> list[Row]:
    """The figures `make bench` quotes (quick: a smoke run, under a minute)."""
    if quick:
        return search_rows("overhead", trials=4, tracking=("false",), console=console)
    return search_rows(trials=8, asha_samples=8, console=console)


def main() -> int:
    parser = argparse.ArgumentParser(description="deeprig search benchmarks")
    parser.add_argument("--only", choices=["overhead", "asha"])
    parser.add_argument("--quick", action="store_true", help="smoke run, under a minute")
    args = parser.parse_args()
    console = make_console()
    if args.quick:
        print_rows(rows(quick=True, console=console), "search (smoke)", console)
        return 0
    rows_overhead, rows_asha = measure(args.only, console=console)

    if rows_overhead:
        table = Table(title="search overhead: trivial trials vs the theoretical minimum")
        columns = (
            "MLflow tracking",
            "trials",
            "at once",
            "one trial, plain s",
            "theoretical min s",
            "raw Tune s",
            "deeprig wall s",
            "ratio",
        )
        for column in columns:
            table.add_column(column, justify="right")
        for tracking, n, conc, trial, ideal, floor, wall in rows_overhead:
            on = "on" if tracking == "true" else "off"
            table.add_row(
                on,
                str(n),
                str(conc),
                f"{trial:.2f}",
                f"{ideal:.1f}",
                f"{floor:.1f}",
                f"{wall:.1f}",
                f"{wall / ideal:.2f}x",
            )
        console.print(table)
    if rows_asha:
        table = Table(title="jobs/tune_digits_cnn_asha.yaml: ASHA vs FIFO (same Optuna seed)")
        for column in (
            "scheduler",
            "trials",
            "stopped early",
            "epochs trained",
            "wall s",
            "best val_accuracy",
        ):
            table.add_column(column, justify="right")
        for scheduler, o in rows_asha:
            table.add_row(
                scheduler,
                str(o.num_trials),
                str(o.num_stopped_early),
                str(o.total_epochs),
                f"{o.seconds:.1f}",
                fmt(o.best_metric),
            )
        console.print(table)
        epochs = {s: o.total_epochs for s, o in rows_asha}
        console.print(f"ASHA/FIFO epochs: {epochs['asha'] / epochs['fifo']:.2f}")
    console.print(f"python {' '.join(sys.argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
