"""`kind: rl`: an RLSpec -> RLlib AlgorithmConfig (new API stack) -> train loop -> MLflow.

The driver owns the loop: `algo.train()` once per iteration, the iteration's metrics sent
to MLflow as one batch (through the same sink a search's rl trial uses), a checkpoint every
N iterations (kept N on disk, each logged as an artifact), stop criteria checked after
every iteration. `--resume` continues the newest unfinished run of the job from its latest
checkpoint, in the same MLflow run. The RLlib config built from the spec, and the spec's
checks against RLlib and Gymnasium, are runners/rl_config.py's.
"""

from __future__ import annotations

import contextlib
import numbers
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from deeprig.cluster.resources import ClusterResources
from deeprig.runners.closing import print_metrics_table
from deeprig.runners.contract import Job, JobRun, run_job
from deeprig.runners.rl_config import build_config, check_rl_spec
from deeprig.spec.rl import RLSpec
from deeprig.tracking.store import private_folder
from deeprig.tracking.tags import RunStatus, Tag

if TYPE_CHECKING:
    from deeprig.tracking.null import NullRecorder
    from deeprig.tracking.runs import RunRecorder

# RLlib result paths -> deeprig's metric names (RLlib's own names where it has one, so a
# user's RLlib knowledge carries over). Learner losses are added by prefix below.
RESULT_METRICS = {
    ("env_runners", "episode_return_mean"): "episode_return_mean",
    ("env_runners", "episode_return_max"): "episode_return_max",
    ("env_runners", "episode_return_min"): "episode_return_min",
    ("env_runners", "episode_len_mean"): "episode_len_mean",
    ("num_env_steps_sampled_lifetime",): "num_env_steps_sampled_lifetime",
    ("env_runners", "num_env_steps_sampled_lifetime"): "num_env_steps_sampled_lifetime",
    ("time_this_iter_s",): "iteration_time_s",
    ("evaluation", "env_runners", "episode_return_mean"): "eval_episode_return_mean",
    # Fault tolerance: env runners replaced after a crash (RLlib restarts them).
    ("num_remote_worker_restarts",): "env_runner_restarts",
    ("num_healthy_workers",): "healthy_env_runners",
}
LEARNER_METRICS = ("total_loss", "policy_loss", "vf_loss", "qf_loss", "entropy", "mean_kl_loss")


# What `--resume` continues: the newest unfinished rl run of the job.
RESUMES = "rl run"
# What the closing table shows, in this order, of the last iteration's metrics.
CLOSING_METRICS = (
    "episode_return_mean",
    "episode_len_mean",
    "num_env_steps_sampled_lifetime",
    "env_steps_per_s",
    "eval_episode_return_mean",
)


@dataclass(frozen=True)
class RLChecked:
    spec: RLSpec

    @property
    def summary(self) -> str:
        return f"{self.spec.algorithm} on {self.spec.env}"


@dataclass(frozen=True)
class RLOutcome:
    job_name: str
    run_id: str | None
    metrics: dict[str, float]
    iterations: int
    checkpoint_path: str | None
    seconds: float
    train_seconds: float = 0.0  # the training loop alone: algorithm built, to the stop rule

    def render(self, console: Console) -> None:
        print_metrics_table(
            console,
            f"{self.job_name}: last iteration",
            self.metrics,
            CLOSING_METRICS,
            self.seconds,
            self.checkpoint_path,
            first=[("iterations", str(self.iterations))],
        )
        if self.run_id:
            console.print(
                f"MLflow run [bold]{self.run_id}[/]; evaluate it: "
                f"[bold]deeprig eval {self.run_id} --episodes 10[/]"
            )


def check(spec: RLSpec, resources: ClusterResources) -> RLChecked:
    """The rl runner's pre-flight (the resources do not limit an rl job: it samples in the
    driver or in env runners RLlib places itself)."""
    check_rl_spec(spec)
    return RLChecked(spec)


def flatten_result(result: dict[str, Any]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for path, name in RESULT_METRICS.items():
        node: Any = result
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, numbers.Real) and node == node:  # not NaN; numpy scalars too
            metrics[name] = float(node)
    for module, values in (result.get("learners") or {}).items():
        if not isinstance(values, dict):
            continue
        for key in LEARNER_METRICS:
            value = values.get(key)
            if isinstance(value, numbers.Real):
                metrics[f"learner.{module}.{key}"] = float(value)
    steps = metrics.get("num_env_steps_sampled_lifetime")
    if steps is not None and result.get("time_this_iter_s"):
        sampled = (result.get("env_runners") or {}).get("num_env_steps_sampled")
        if isinstance(sampled, numbers.Real):
            metrics["env_steps_per_s"] = float(sampled) / result["time_this_iter_s"]
    return metrics


def should_stop(spec: RLSpec, metrics: dict[str, float], iteration: int, seconds: float) -> bool:
    stop = spec.stop
    target = stop.episode_return_mean
    return bool(
        (target is not None and metrics.get("episode_return_mean", float("-inf")) >= target)
        or (
            stop.num_env_steps
            and metrics.get("num_env_steps_sampled_lifetime", 0) >= stop.num_env_steps
        )
        or (stop.iterations and iteration >= stop.iterations)
        or (stop.seconds and seconds >= stop.seconds)
    )


def run(spec: RLSpec, job: Job) -> RLOutcome:
    return run_job(spec, job, check, _train, resumes=RESUMES)


def _train(job_run: JobRun[RLSpec, RLChecked]) -> RLOutcome:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    spec, recorder, console = job_run.spec, job_run.recorder, job_run.job.console
    started = time.perf_counter()
    run_id = recorder.run_id
    sink = recorder.metrics_sink()
    # (the checkpoints are their owner's alone, as the store's are)
    folder = private_folder(job_run.job.home / "rl") / (
        f"{spec.name}-{run_id[:8]}" if run_id else spec.name
    )
    folder.mkdir(exist_ok=True)
    algo = build_config(spec).build_algo()
    iteration = 0
    latest = _latest_checkpoint(folder)
    if latest is not None:
        algo.restore_from_path(str(latest))
        iteration = int(latest.name.split("_")[-1])
        recorder.set_tags({Tag.RESUMED_FROM_ITERATION: str(iteration)})
        console.print(f"resumed from {latest} (iteration {iteration})")
    metrics: dict[str, float] = {}
    checkpoint: Path | None = latest
    progress = Progress(
        TextColumn("[bold]iteration {task.completed}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
    )
    task = progress.add_task("rl", total=spec.stop.iterations, status="sampling...")
    loop_started, train_seconds = time.perf_counter(), 0.0
    try:
        with progress, _torch_threads(spec.learners.torch_threads):
            while True:
                result = algo.train()
                iteration += 1
                metrics = flatten_result(result)
                sink.log(metrics, step=iteration)
                done = should_stop(spec, metrics, iteration, time.perf_counter() - started)
                train_seconds = time.perf_counter() - loop_started
                if done or iteration % spec.checkpoint.every_n_iterations == 0:
                    checkpoint = _save(algo, folder, iteration, spec.checkpoint.num_to_keep)
                    # The metrics up to a checkpoint are recorded before it is: a resume
                    # from it then neither loses nor repeats an iteration's record.
                    sink.flush()
                    recorder.log_directory(checkpoint, f"checkpoints/{checkpoint.name}")
                progress.update(task, completed=iteration, status=_status_line(metrics))
                if done:
                    break
    finally:
        algo.stop()
        sink.flush()
    record_end(recorder, checkpoint, iteration, metrics)
    return RLOutcome(
        spec.name,
        run_id,
        metrics,
        iteration,
        str(checkpoint) if checkpoint else None,
        time.perf_counter() - started,
        train_seconds,
    )


def record_end(
    recorder: RunRecorder | NullRecorder,
    checkpoint: Path | None,
    iteration: int,
    metrics: dict[str, float],
) -> None:
    """What an rl job leaves on its run at its end, the run marked FINISHED: writes only,
    from what the driver holds (the closing table is its last iteration's metrics), so a
    job whose tracking server is away ends the same, its records in the spool."""
    recorder.set_tags({Tag.CHECKPOINT_PATH: str(checkpoint), Tag.ITERATIONS: str(iteration)})
    if "episode_return_mean" in metrics:  # (the last checkpoint's: rl keeps the latest)
        from deeprig.tracking.key_metric import AT_LAST, record_key_metric

        record_key_metric(recorder, "episode_return_mean", metrics["episode_return_mean"], AT_LAST)
    recorder.finish(RunStatus.FINISHED)


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads in this process set for the block, restored after it."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _status_line(metrics: dict[str, float]) -> str:
    ret = metrics.get("episode_return_mean")
    steps = int(metrics.get("num_env_steps_sampled_lifetime", 0))
    return f"return {ret:.1f}  env steps {steps}" if ret is not None else f"env steps {steps}"


def _save(algo, folder: Path, iteration: int, keep: int) -> Path:
    path = folder / f"iteration_{iteration:06d}"
    algo.save_to_path(str(path))
    for old in sorted(folder.glob("iteration_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def _latest_checkpoint(folder: Path) -> Path | None:
    found = sorted(folder.glob("iteration_*"))
    return found[-1] if found else None
