"""Long-job features at their price: step-level metrics (`tracking.log_every_n_steps`) and
mid-epoch checkpoints (`checkpoint.every_n_steps`) against the same deeprig job without
them, side by side on this machine.

The job is train_overhead's synthetic CNN (1 worker, 1 thread, 50 optimiser steps an
epoch, tracking on everywhere). Steady-state epoch: the wall time between consecutive
epoch ends (as in benchmarks/tracking.py). Median of `--repeats` runs of each variant,
their order rotated each repeat so a shared machine's drift lands on all of them.

    python benchmarks/long_jobs.py                 # ~5 minutes on 2 CPUs
    python benchmarks/long_jobs.py --quick         # smoke: about a minute

Target (issue 13): log_every_n_steps 50 at most 1.03x the job without it.
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

FIGURE = "8 long jobs"
STEPS_PER_EPOCH = 50  # synthetic-cnn: 3200 training rows at batch 64
VARIANTS = {
    "plain": [],
    "log every 50 steps": ["tracking.log_every_n_steps=50"],
    "log every step": ["tracking.log_every_n_steps=1"],
    "checkpoint every 10 steps": ["checkpoint.every_n_steps=10"],
}


def long_job_rows(
    workload: str = "synthetic-cnn",
    epochs: int = 5,
    warmup: int = 2,
    repeats: int = 2,
    console: Console | None = None,
) -> list[Row]:
    from deeprig.cluster.session import ray_session

    console = console or Console()
    names = list(VARIANTS)
    runs: dict[str, list] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp, ray_session():
        for r in range(repeats):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                console.print(f"  {workload}, repeat {r + 1}/{repeats}: {name}")
                spec = spec_for(workload, epochs, VARIANTS[name])
                runs[name].append(run_deeprig_train(spec, Path(tmp), name.replace(" ", "-")))

    def steady(name: str) -> float:
        return median(median(run.steady_gaps(warmup)) for run in runs[name])

    setting = f"{workload}, 1 worker, {epochs} epochs of {STEPS_PER_EPOCH} steps"
    base = steady("plain")
    checkpoint_cost_ms = (steady("checkpoint every 10 steps") - base) / 4 * 1000
    return [
        Row(
            FIGURE,
            f"{workload}: steady-state epoch, log_every_n_steps 50 vs none",
            "on s/epoch",
            steady("log every 50 steps"),
            "off s/epoch",
            base,
            Target("<=", 1.03),
            repeats,
            f"{setting}; epochs {warmup + 1}-{epochs}",
        ),
        Row(
            FIGURE,
            f"{workload}: steady-state epoch, log_every_n_steps 1 vs none",
            "on s/epoch",
            steady("log every step"),
            "off s/epoch",
            base,
            None,
            repeats,
            f"{setting}; a point every step, batched every 5 s",
        ),
        Row(
            FIGURE,
            f"{workload}: steady-state epoch, checkpoint.every_n_steps 10 vs none",
            "on s/epoch",
            steady("checkpoint every 10 steps"),
            "off s/epoch",
            base,
            None,
            repeats,
            f"{setting}; 4 mid-epoch checkpoints an epoch, ~{checkpoint_cost_ms:.0f} ms each",
        ),
    ]


def rows(quick: bool = False, console: Console | None = None) -> list[Row]:
    """The figures `make bench` quotes (quick: a smoke run)."""
    if quick:
        return long_job_rows("synthetic-cnn", epochs=3, warmup=1, repeats=1, console=console)
    return long_job_rows(console=console)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_epoch_options(parser)
    parser.set_defaults(repeats=2)
    args = parser.parse_args()
    console = make_console()
    if args.quick:
        found = rows(quick=True, console=console)
    else:
        found = long_job_rows(
            epochs=args.epochs, warmup=args.warmup, repeats=args.repeats, console=console
        )
    print_rows(found, "Step metrics and mid-epoch checkpoints vs the same job without", console)
    console.print(f"python {' '.join(sys.argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
