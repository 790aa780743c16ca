"""`kind: train`: a validated TrainSpec -> Ray Train TorchTrainer over Ray Data -> MLflow.

The flow: check everything that can be checked before Ray starts (data, shapes, resources)
-> start or join Ray -> create the MLflow run -> fit -> log the best model, its checkpoint
and the learning curve -> finish the run. Any failure on the way marks the run FAILED.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from deeprig.cluster.preflight import check_connected_cluster
from deeprig.cluster.resources import (
    ClusterResources,
    ResourceProblems,
    WorkerBudget,
    connected_resources,
    local_resources,
    plan_budget,
)
from deeprig.cluster.session import ray_session
from deeprig.data import DataInfo, DataProblem, build_datasets, describe_data
from deeprig.models import InputShapeError, check_input_shape
from deeprig.runners.job_runs import open_job_run
from deeprig.spec.errors import Problem, SpecError
from deeprig.spec.models import TrainSpec
from deeprig.tracking.runs import closed_on_failure
from deeprig.tracking.store import checkpoint_storage, deeprig_home, resolve_tracking

# A worker keeps its shard in memory when it is at most this big (data.cache: auto).
IN_MEMORY_SHARD_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class TrainChecks:
    """What the pre-flight learned: enough to plan the job without touching Ray."""

    data: DataInfo
    budget: WorkerBudget
    in_memory: bool


@dataclass(frozen=True)
class TrainOutcome:
    run_id: str | None
    metrics: dict[str, float]
    checkpoint_path: str | None
    tracking_uri: str | None
    seconds: float


def reported_metrics(task: str) -> set[str]:
    score = "val_accuracy" if task == "classification" else "val_rmse"
    return {"train_loss", "val_loss", score, "epoch_time_s", "samples_per_s", "lr", "epoch"}


def check_train_spec(spec: TrainSpec, resources: ClusterResources) -> TrainChecks:
    """Every check that needs the data or the hardware, all problems at once."""
    problems: list[Problem] = []
    data: DataInfo | None = None
    budget: WorkerBudget | None = None
    try:
        data = describe_data(spec.data)
    except DataProblem as exc:
        problems.append(Problem(exc.path, str(exc)))
    if data is not None:
        try:
            check_input_shape(spec.model.name, data.input_shape)
        except InputShapeError as exc:
            problems.append(Problem("model.name", str(exc)))
        allowed = reported_metrics(data.task)
        if spec.checkpoint.metric not in allowed:
            problems.append(
                Problem(
                    "checkpoint.metric",
                    f"{spec.checkpoint.metric!r} is not reported by a {data.task} job "
                    f"(one of: {', '.join(sorted(allowed))})",
                )
            )
        train_rows_per_worker = data.num_train // spec.scaling.num_workers
        if train_rows_per_worker < 1:
            problems.append(
                Problem(
                    "scaling.num_workers",
                    f"{data.num_train} training rows cannot feed "
                    f"{spec.scaling.num_workers} workers",
                )
            )
    try:
        budget = plan_budget(spec.scaling, resources)
    except ResourceProblems as exc:
        problems.extend(exc.problems)
    if problems:
        raise SpecError(problems)
    assert data is not None and budget is not None
    return TrainChecks(data, budget, _keeps_shard_in_memory(spec, data))


def _keeps_shard_in_memory(spec: TrainSpec, data: DataInfo) -> bool:
    if spec.data.cache != "auto":
        return spec.data.cache == "memory"
    shard_bytes = data.num_rows * data.bytes_per_row / spec.scaling.num_workers
    return shard_bytes <= IN_MEMORY_SHARD_BYTES


def run_train(
    spec: TrainSpec,
    *,
    spec_text: str,
    spec_path: Path,
    address: str | None = None,
    console: Console | None = None,
    home: Path | None = None,
) -> TrainOutcome:
    """Run a train job to the end. Raises SpecError (bad input, nothing recorded) or the
    training failure (after marking the MLflow run FAILED)."""
    console = console or Console()
    home = home or deeprig_home()
    target = resolve_tracking(spec.tracking.uri, home) if spec.tracking.enabled else None
    checks = None if address else check_train_spec(spec, local_resources())

    with ray_session(address):
        if checks is None:
            resources = connected_resources()
            checks = check_train_spec(spec, resources)
            check_connected_cluster(spec, resources, target)
        recorder = open_job_run(spec, spec_text, spec_path, target, None, console)
        with closed_on_failure(recorder):
            outcome = _fit_and_record(spec, checks, recorder, target, home, console)
    return outcome


def build_trainer(
    spec: TrainSpec,
    checks: TrainChecks,
    run_id: str | None,
    sink,
    storage: str,
    run_name: str,
    callbacks: list | None = None,
):
    """The TorchTrainer for a spec: built the same way for a train job and a tune trial."""
    from ray.train import (
        CheckpointConfig,
        DataConfig,
        FailureConfig,
        LoggingConfig,
        RunConfig,
        ScalingConfig,
    )
    from ray.train.torch import TorchTrainer

    from deeprig.training.loop import train_loop_per_worker
    from deeprig.training.plan import TrainPlan

    budget = checks.budget
    train_ds, val_ds = build_datasets(
        spec.data, checks.data, spec.seed, spec.scaling.num_workers, budget.data_cpus
    )
    callbacks = list(callbacks or [])
    if sink is not None:
        from deeprig.tracking.report_logger import EpochMetricsLogger

        callbacks.append(EpochMetricsLogger(sink, spec.optim.num_epochs))
        sink = sink.tags_only()
    plan = TrainPlan(
        spec=spec,
        data=checks.data,
        threads_per_worker=budget.threads_per_worker,
        in_memory=checks.in_memory,
        run_id=run_id,
        sink=sink,
    )
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"plan": plan},
        scaling_config=ScalingConfig(
            num_workers=spec.scaling.num_workers,
            use_gpu=spec.scaling.use_gpu,
            resources_per_worker=budget.resources_per_worker(),
            placement_strategy=spec.scaling.placement_strategy,
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage,  # absolute or a URI (FIELD-NOTES)
            checkpoint_config=CheckpointConfig(
                num_to_keep=spec.checkpoint.num_to_keep,
                checkpoint_score_attribute=spec.checkpoint.metric,
                checkpoint_score_order=spec.checkpoint.mode,
            ),
            failure_config=FailureConfig(max_failures=spec.failure.max_failures),
            # deeprig shows progress itself; Train's per-report INFO lines would drown it.
            logging_config=LoggingConfig(log_level="WARNING"),
            callbacks=callbacks,
        ),
        datasets={"train": train_ds, "val": val_ds},
        dataset_config=DataConfig(datasets_to_split=["train", "val"]),
    )


def _fit_and_record(spec, checks, recorder, target, home, console) -> TrainOutcome:
    from deeprig.progress import EpochProgress
    from deeprig.tracking.sink import MlflowMetricsSink

    started = time.perf_counter()
    run_id = recorder.run_id if recorder else None
    sink = MlflowMetricsSink(target.uri, run_id) if recorder else None
    run_name = f"{spec.name}-{run_id[:8]}" if run_id else f"{spec.name}-{int(time.time())}"
    storage = checkpoint_storage(spec.checkpoint.storage, home)
    trainer = build_trainer(spec, checks, run_id, sink, storage, run_name)
    score = "val_accuracy" if checks.data.task == "classification" else "val_rmse"
    console.print(
        f"Training [bold]{spec.model.name}[/] on {spec.data.source}: "
        f"{checks.data.num_train} train / {checks.data.num_val} val rows, "
        f"{spec.scaling.num_workers} worker(s) x {checks.budget.cpus_per_worker:g} CPU"
        + (" + 1 GPU" if spec.scaling.use_gpu else "")
    )
    if recorder:
        with EpochProgress(
            console,
            spec.optim.num_epochs,
            recorder.latest_metrics,
            ("train_loss", "val_loss", score),
        ):
            result = trainer.fit()
    else:
        result = trainer.fit()
    best = _best_checkpoint(result, spec)
    metrics = dict(best[1]) if best else dict(result.metrics or {})
    checkpoint_path = best[0].path if best else None
    if recorder:
        _record_results(recorder, spec, checks, best, score)
        recorder.finish("FINISHED")
    return TrainOutcome(
        run_id=run_id,
        metrics=metrics,
        checkpoint_path=checkpoint_path,
        tracking_uri=target.uri if target else None,
        seconds=time.perf_counter() - started,
    )


def _best_checkpoint(result, spec: TrainSpec):
    ranked = [(c, m) for c, m in (result.best_checkpoints or []) if spec.checkpoint.metric in m]
    if not ranked:
        return (result.checkpoint, result.metrics) if result.checkpoint else None
    sign = 1 if spec.checkpoint.mode == "min" else -1
    return min(ranked, key=lambda cm: sign * cm[1][spec.checkpoint.metric])


def _record_results(recorder, spec: TrainSpec, checks: TrainChecks, best, score: str) -> None:
    """Learning curve, the best checkpoint and the final model (the best by the spec's
    metric), logged from the driver after training."""
    import numpy as np

    from deeprig.models import build_model
    from deeprig.training.checkpoint import load_state

    recorder.log_learning_curve(("train_loss", "val_loss"), score)
    if best is None:
        return
    checkpoint, metrics = best
    recorder.set_tags(
        {
            "deeprig.best_epoch": str(int(metrics.get("epoch", 0))),
            "deeprig.checkpoint_path": checkpoint.path,
        }
    )
    with checkpoint.as_directory() as directory:
        state = load_state(directory)
        recorder.log_directory(directory, "checkpoints/best")
    model = build_model(spec.model, checks.data.input_shape, checks.data.num_outputs)
    model.load_state_dict(state["model"])
    sample = np.zeros((2, *checks.data.input_shape), dtype=np.float32)
    recorder.log_torch_model(model, sample, spec.tracking.register_as)
