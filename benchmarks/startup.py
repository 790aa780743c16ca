"""Start-up and wind-down: `deeprig run jobs/quickstart.yaml` against the raw-Ray floor of
the same 2-worker job and against the same training as a hand-written PyTorch script, each
a fresh process (its imports count), interleaved round by round.

- A: `deeprig run jobs/quickstart.yaml` in an empty deeprig home (embedded MLflow store);
  its stages are the `time.*` metrics the run records (runners/stages.py).
- Floor: benchmarks/floors/raw_ray.py, imports + `ray.init` + a 2-worker `TorchTrainer`
  whose loop reads its data once and reports once, then `ray.shutdown()`. Without Ray Data
  (the digits handed to the workers in memory, as deeprig hands them) and with it.
- Plain: benchmarks/floors/plain_quickstart.py, the same MLP, data and 15 epochs, no Ray.

Targets (issue 15): quickstart <= 1.1x the floor, <= 3x the plain script, its first
epoch's end <= 10 s after the process started.

    python benchmarks/startup.py               # 3 rounds, ~5 minutes on 2 CPUs
    python benchmarks/startup.py --repeats 1
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import Row, Target, make_console, median, print_rows
from rich.console import Console

FIGURE = "11 start-up"
REPO = Path(__file__).resolve().parents[1]
FLOORS = REPO / "benchmarks" / "floors"


@dataclass
class Timed:
    """One process: its wall time from launch to exit, and its stage marks (seconds)."""

    wall_s: float
    stages: dict[str, float] = field(default_factory=dict)


def _launch(args: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """(launch wall clock, seconds to exit, stdout) of one fresh Python process."""
    # (a tracking server or a running Ray in this shell's environment would be joined)
    base = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    started = time.time()
    done = subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )
    wall = time.time() - started
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return started, wall, done.stdout


def deeprig_quickstart(epochs: int | None) -> Timed:
    from mlflow import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "deeprig-home"
        settings = ["--set", f"optim.num_epochs={epochs}"] if epochs else []
        _, wall, _ = _launch(
            ["-m", "deeprig.cli", "run", "jobs/quickstart.yaml", *settings],
            env={"DEEPRIG_HOME": str(home)},
        )
        client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
        (run,) = client.search_runs(
            [client.get_experiment_by_name("quickstart").experiment_id]  # type: ignore[union-attr]
        )
        metrics = run.data.metrics
    stages = {k.removeprefix("time.").removesuffix("_s"): v for k, v in metrics.items()}
    # What follows the run's last record: the run's close, Ray's shutdown, the exit.
    stages["exit"] = wall - stages["total"]
    return Timed(wall, stages)


def raw_ray_floor(ray_data: bool, ddp: bool = False) -> Timed:
    flags = ([] if ray_data else ["--no-ray-data"]) + (["--ddp"] if ddp else [])
    launched, wall, out = _launch([str(FLOORS / "raw_ray.py"), *flags])
    marks = {
        line.split()[1]: float(line.split()[2]) - launched
        for line in out.splitlines()
        if line.startswith("FLOOR ")
    }
    return Timed(
        wall,
        {
            "imports": marks["imported"],
            "ray_start": marks["ray_started"] - marks["imported"],
            "to_report": marks["reported"] - marks["ray_started"],  # data + workers + loop
            "first_report_at": marks["reported"],
            "wind_down": wall - marks["reported"],
        },
    )


def plain_script() -> Timed:
    _, wall, _ = _launch([str(FLOORS / "plain_quickstart.py")])
    return Timed(wall)


def stage(runs: list[Timed], name: str) -> float:
    return median(r.stages.get(name, float("nan")) for r in runs)


def rows(quick: bool = False, console: Console | None = None, repeats: int = 3) -> list[Row]:
    console = console or make_console()
    repeats = 1 if quick else repeats
    epochs = 2 if quick else None
    ours: list[Timed] = []
    floor: list[Timed] = []
    floor_data: list[Timed] = []
    floor_ddp: list[Timed] = []
    plain: list[Timed] = []
    for i in range(repeats):  # interleaved: drift in the machine's speed lands on every side
        console.print(f"[dim]round {i + 1}/{repeats}: deeprig quickstart...[/]")
        ours.append(deeprig_quickstart(epochs))
        console.print(f"[dim]round {i + 1}/{repeats}: raw-Ray floor: Ray Data, none, DDP[/]")
        floor.append(raw_ray_floor(ray_data=False))
        floor_data.append(raw_ray_floor(ray_data=True))
        floor_ddp.append(raw_ray_floor(ray_data=False, ddp=True))
        console.print(f"[dim]round {i + 1}/{repeats}: plain PyTorch script...[/]")
        plain.append(plain_script())
    wall = median(r.wall_s for r in ours)
    n = repeats
    own = ("checks", "run_create", "data")
    deeprig_only = median(sum(r.stages.get(s, 0.0) for s in own) for r in ours)
    own_text = ", ".join(f"{s} {stage(ours, s):.1f}" for s in own)
    wind_down = median(r.stages["finalize"] + r.stages["exit"] for r in ours)
    return [
        Row(
            FIGURE,
            "quickstart, whole process, vs raw-Ray floor (data in memory)",
            "deeprig s",
            wall,
            "floor s",
            median(r.wall_s for r in floor),
            Target("<=", 1.1),
            n,
            "same 2 workers x 0.5 CPU and digits; the floor trains nothing",
        ),
        Row(
            FIGURE,
            "quickstart vs raw-Ray floor through Ray Data",
            "deeprig s",
            wall,
            "floor s",
            median(r.wall_s for r in floor_data),
            None,
            n,
            "the floor the issue quoted (25.7 s); deeprig no longer builds Ray Data here",
        ),
        Row(
            FIGURE,
            "quickstart vs the hand-written PyTorch script",
            "deeprig s",
            wall,
            "plain s",
            median(r.wall_s for r in plain),
            Target("<=", 3.0),
            n,
            "plain: same MLP, data, 15 epochs; no Ray, tracking, checkpoints",
        ),
        Row(
            FIGURE,
            "first epoch's end, from the process start",
            "deeprig s",
            stage(ours, "first_epoch_at"),
            "budget s",
            10.0,
            Target("<=", 1.0),
            n,
            f"the floor's one report comes at {stage(floor, 'first_report_at'):.1f} s",
        ),
        Row(
            FIGURE,
            "stage: imports",
            "deeprig s",
            stage(ours, "imports"),
            "floor s",
            stage(floor, "imports"),
            None,
            n,
            "process start to the CLI's first step; the floor: ray, torch, sklearn",
        ),
        Row(
            FIGURE,
            "stage: Ray start",
            "deeprig s",
            stage(ours, "ray_start"),
            "floor s",
            stage(floor, "ray_start"),
            None,
            n,
            "ray.init on a 2-CPU local cluster, no dashboard on either side",
        ),
        Row(
            FIGURE,
            "stage: worker group, fit() to epoch 1's start",
            "deeprig s",
            stage(ours, "workers_start"),
            "floor s",
            stage(floor, "to_report"),
            None,
            n,
            "floor: fit() to its loop's report (its loop does nothing else)",
        ),
        Row(
            FIGURE,
            "stage: worker group, vs a floor whose loop wraps the model in DDP",
            "deeprig s",
            stage(ours, "workers_start"),
            "floor+DDP s",
            stage(floor_ddp, "to_report"),
            None,
            n,
            "floor+DDP: prepare_model(the quickstart's MLP) before its report "
            f"(whole process {median(r.wall_s for r in floor_ddp):.1f} s)",
        ),
        Row(
            FIGURE,
            "stage: deeprig's own (checks, MLflow run, data)",
            "deeprig s",
            deeprig_only,
            "floor s",
            float("nan"),
            None,
            n,
            own_text,
        ),
        Row(
            FIGURE,
            "stage: wind-down, last report to exit",
            "deeprig s",
            wind_down,
            "floor s",
            stage(floor, "wind_down"),
            None,
            n,
            f"deeprig: results, model, plot {stage(ours, 'finalize'):.1f} s + shutdown",
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smoke: 1 round, 2 epochs")
    args = parser.parse_args()
    console = make_console()
    found = rows(args.quick, console, args.repeats)
    print_rows(found, "start-up: quickstart vs raw-Ray floor vs plain script", console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
