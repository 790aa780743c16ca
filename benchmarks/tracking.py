"""Tracking overhead: the same deeprig train job with MLflow tracking on and off
(`tracking.enabled: true | false`), side by side on this machine.

The job is train_overhead's synthetic CNN (1 worker, 1 thread). Steady-state epoch: the wall
time between consecutive epoch ends (when each epoch's checkpoint reaches storage; every
epoch's checkpoint is kept on both sides so the record can be read back whether MLflow
records anything or not). End-to-end: the train runner's wall time, with Ray already up on both
sides (tracking adds the MLflow run, per-epoch metrics, the learning curve, the best
checkpoint and the model as artifacts). Median of `--repeats` runs of each side, interleaved
on/off then off/on.

    python benchmarks/tracking.py                 # ~2.5 minutes on 2 CPUs
    python benchmarks/tracking.py --quick         # smoke: < 1 minute

Target (issue 6): tracking on at most 1.02x tracking off.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from harness import (
    Row,
    Target,
    add_epoch_options,
    make_console,
    median,
    print_rows,
    run_deeprig_train,
)
from rich.console import Console
from train_overhead import spec_for

FIGURE = "4 tracking"


def tracking_rows(
    workload: str = "synthetic-cnn",
    epochs: int = 5,
    warmup: int = 2,
    repeats: int = 3,
    extra: tuple[str, ...] = (),
    console: Console | None = None,
) -> list[Row]:
    from deeprig.cluster.session import ray_session

    console = console or Console()
    runs: dict[bool, list] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp, ray_session():
        for r in range(repeats):
            for enabled in (True, False) if r % 2 == 0 else (False, True):
                on = "on" if enabled else "off"
                console.print(f"  {workload}, repeat {r + 1}/{repeats}: tracking {on}")
                spec = spec_for(workload, epochs, [f"tracking.enabled={enabled}", *extra])
                runs[enabled].append(run_deeprig_train(spec, Path(tmp), f"tracking-{on}"))

    def steady(enabled: bool) -> float:
        return median(median(run.steady_gaps(warmup)) for run in runs[enabled])

    def total(enabled: bool) -> float:
        return median(run.total_s for run in runs[enabled])

    setting = f"{workload}, 1 worker, {epochs} epochs"
    return [
        Row(
            FIGURE,
            f"{workload}: steady-state epoch, tracking on vs off",
            "on s/epoch",
            steady(True),
            "off s/epoch",
            steady(False),
            Target("<=", 1.02),
            repeats,
            f"{setting}; epochs {warmup + 1}-{epochs}",
        ),
        Row(
            FIGURE,
            f"{workload}: end-to-end train runner, tracking on vs off",
            "on s",
            total(True),
            "off s",
            total(False),
            Target("<=", 1.02),
            repeats,
            f"{setting}; Ray already up on both sides; after the last epoch's end: on "
            f"{median(r.after_last_epoch_s for r in runs[True]):.1f} s, off "
            f"{median(r.after_last_epoch_s for r in runs[False]):.1f} s; call to end of "
            f"epoch 1: on {median(r.before_first_epoch_s for r in runs[True]):.1f} s, off "
            f"{median(r.before_first_epoch_s for r in runs[False]):.1f} s",
        ),
    ]


def rows(quick: bool = False, console: Console | None = None) -> list[Row]:
    """The figures `make bench` quotes (quick: a smoke run, under a minute)."""
    if quick:
        return tracking_rows("digits-cnn", epochs=3, warmup=1, repeats=1, console=console)
    return tracking_rows(console=console)


def main() -> int:
    from train_overhead import WORKLOADS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="synthetic-cnn")
    add_epoch_options(parser)
    args = parser.parse_args()
    console = make_console()
    if args.quick:
        found = rows(quick=True, console=console)
    else:
        found = tracking_rows(
            args.workload, args.epochs, args.warmup, args.repeats, console=console
        )
    print_rows(found, "MLflow tracking on vs off, same deeprig job", console)
    console.print(f"python {' '.join(sys.argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
