"""A train spec as Ray Train's `TorchTrainer`: its data prepared on the driver, its
controller's callbacks, its scaling and run configs, and what every worker runs with its
config (`worker_config`). Built the same way for a train job and a search's trial."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from deeprig.cluster.resources import WorkerBudget
from deeprig.data import build_datasets
from deeprig.data.info import Fitted
from deeprig.data.pipeline import PreparedData
from deeprig.failures import classified
from deeprig.runners.contract import user_frames
from deeprig.runners.train_checked import TrainChecked
from deeprig.spec.scaling import ScalingSpec
from deeprig.spec.train import TrainSpec

if TYPE_CHECKING:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from deeprig.tracking.sink import MlflowMetricsSink
    from deeprig.training.worker_config import MetricsSink, WorkerConfig


def train_run_name(spec: TrainSpec, run_id: str | None) -> str:
    """The Ray Train run of a job: named after its MLflow run, so --resume finds its
    checkpoints again."""
    return f"{spec.name}-{run_id[:8]}" if run_id else f"{spec.name}-{int(time.time())}"


def prepare_data(spec: TrainSpec, checked: TrainChecked) -> PreparedData | None:
    """The job's splits, preprocessing fitted on the training split (Ray is up); None when
    the user's loop loads its own data."""
    if spec.data is None or checked.data is None:
        return None
    workers, data_cpus = spec.scaling.max_workers, checked.budget.data_cpus
    return build_datasets(spec.data, checked.data, spec.seed, workers, data_cpus, checked.in_memory)


def build_trainer(
    spec: TrainSpec,
    checked: TrainChecked,
    prepared: PreparedData | None,
    run_id: str | None,
    sink: MlflowMetricsSink | None,
    storage: str,
    run_name: str,
    callbacks: list | None = None,
) -> TorchTrainer:
    """The TorchTrainer for a spec: built the same way for a train job and a tune trial."""
    from ray.train import DataConfig
    from ray.train.torch import TorchTrainer

    callbacks = [*(callbacks or []), *controller_callbacks(spec, checked.budget, sink)]
    if sink is not None:  # (the controller logs each epoch's report: the workers only tag)
        sink = sink.tags_only()
    loop, loop_config = _worker_entry(spec, checked, prepared, run_id, sink)
    return TorchTrainer(
        loop,
        train_loop_config=loop_config,
        scaling_config=_scaling_config(spec, checked.budget),
        run_config=_run_config(spec, storage, run_name, callbacks),
        datasets=(
            None if prepared is None or _hands_arrays(checked, prepared) else prepared.for_trainer()
        ),
        dataset_config=DataConfig(datasets_to_split=["train", "val"]),
    )


def controller_callbacks(
    spec: TrainSpec, budget: WorkerBudget, sink: MlflowMetricsSink | None
) -> list:
    """What the Train controller runs around the workers: waiting for their resources,
    ending the job on a failure a restart cannot cure, and (with a sink) logging each
    report and counting preemptions."""
    from deeprig.runners.resource_wait import WaitForResources, WorkerNeeds

    needs = WorkerNeeds(
        spec.scaling.min_workers,
        budget.cpus_per_worker,
        budget.gpus_per_worker,
        spec.scaling.placement_strategy == "STRICT_SPREAD",
    )
    callbacks: list = [WaitForResources(spec.failure.wait_for_resources_s, needs)]
    if spec.failure.max_failures != 0:
        from deeprig.runners.retries import EndUnlessRetried

        callbacks.append(EndUnlessRetried(spec.failure.retry_policy()))
    if sink is not None:
        from deeprig.runners.preemptions import CountPreemptions
        from deeprig.tracking.report_logger import EpochMetricsLogger, SinkWarmUp, WorldSizes

        # The user's loop reports when it likes: each report is sent as it comes.
        epochs = None if spec.loop is not None else spec.optim.num_epochs
        sizes = None
        if spec.scaling.elastic:
            sizes = WorldSizes(None if spec.loop is not None else spec.batch_per_worker)
        logger = EpochMetricsLogger(sink, epochs, sizes)
        callbacks += [SinkWarmUp(sink), logger, CountPreemptions(sink)]
    return callbacks


def _scaling_config(spec: TrainSpec, budget: WorkerBudget) -> ScalingConfig:
    from ray.train import ScalingConfig

    # (Train V2's ScalingConfig, the one Ray uses, takes (min, max) workers and the resize
    # interval; the type Ray declares for `ray.train.ScalingConfig` is V1's.)
    return ScalingConfig(  # type: ignore[call-arg]
        num_workers=ray_num_workers(spec.scaling),  # type: ignore[arg-type]
        use_gpu=spec.scaling.use_gpu,
        resources_per_worker=budget.resources_per_worker(),
        placement_strategy=spec.scaling.placement_strategy,
        elastic_resize_monitor_interval_s=spec.scaling.resize_interval_s,
    )


def _run_config(spec: TrainSpec, storage: str, run_name: str, callbacks: list) -> RunConfig:
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig

    # (Train V2's RunConfig, the one Ray uses, takes logging_config; the type Ray declares
    # for `ray.train.RunConfig` is V1's, which does not.)
    return RunConfig(  # type: ignore[call-arg]
        name=run_name,
        # Absolute or a URI: a relative path kills Train's controller (ArrowInvalid).
        storage_path=storage,
        checkpoint_config=CheckpointConfig(
            num_to_keep=spec.checkpoint.num_to_keep,
            checkpoint_score_attribute=spec.checkpoint.metric,
            checkpoint_score_order=spec.checkpoint.mode,
        ),
        failure_config=FailureConfig(max_failures=spec.failure.max_failures),
        # deeprig shows progress itself; Train's per-report INFO lines would drown it.
        logging_config=LoggingConfig(log_level="WARNING"),
        callbacks=callbacks,
    )


def ray_num_workers(scaling: ScalingSpec) -> int | tuple[int, int]:
    """Ray Train's `num_workers`: a fixed count, or (min, max), its elastic worker group."""
    if scaling.elastic:
        return (scaling.min_workers, scaling.max_workers)
    return scaling.max_workers


def _worker_entry(
    spec: TrainSpec,
    checked: TrainChecked,
    prepared: PreparedData | None,
    run_id: str | None,
    sink: MlflowMetricsSink | None,
) -> tuple[Any, dict[str, Any]]:
    """What every worker runs, and its config: deeprig's loop with its WorkerConfig, or the
    user's loop with exactly `loop.config` (deeprig's part under its own key); either
    raises its failure classified, with the user's frames (deeprig.failures)."""
    from deeprig.training.loop import train_loop_per_worker
    from deeprig.training.user_loop import DEEPRIG_KEY, user_loop_per_worker

    user = user_frames(spec, checked.code)
    if spec.loop is not None:
        own = {"code": checked.code, "function": spec.loop.function}
        return classified(user_loop_per_worker, user), {**spec.loop.config, DEEPRIG_KEY: own}
    assert prepared is not None  # (deeprig's loop always has data)
    arrays = None
    if _hands_arrays(checked, prepared):
        import ray

        assert prepared.arrays is not None
        arrays = {name: ray.put(split) for name, split in prepared.arrays.items()}
    worker = worker_config(spec, checked, prepared.fitted, run_id, sink, arrays)
    return classified(train_loop_per_worker, user), {"worker": worker}


def _hands_arrays(checked: TrainChecked, prepared: PreparedData) -> bool:
    """Arrays a worker holds in memory go through the object store, not Ray Data (the
    user's own loop reads Ray Datasets: it always gets them)."""
    return prepared.arrays is not None and checked.in_memory and checked.spec.loop is None


def worker_config(
    spec: TrainSpec,
    checked: TrainChecked,
    fitted: Fitted,
    run_id: str | None,
    sink: MetricsSink | None,
    arrays: dict[str, Any] | None = None,
) -> WorkerConfig:
    """What deeprig's loop needs on a worker, for a Ray Train worker and a Tune trial alike."""
    from deeprig.tracking.null import NullSink
    from deeprig.training.worker_config import WorkerConfig

    assert checked.data is not None  # (deeprig's loop always has data)
    return WorkerConfig(
        spec=spec,
        data=checked.data,
        threads_per_worker=checked.budget.threads_per_worker,
        in_memory=checked.in_memory,
        run_id=run_id,
        sink=sink or NullSink(),  # (a search's trials and tracking off: nothing records)
        code=checked.code,
        fitted=fitted,
        arrays=arrays,
    )
