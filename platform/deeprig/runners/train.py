"""`kind: train`: a validated TrainSpec -> Ray Train TorchTrainer over Ray Data -> MLflow.

The flow (the skeleton is runners/contract.py's `run_job`): check everything that can be
checked before Ray starts (data, shapes, resources) -> start or join Ray -> create the
MLflow run -> fit -> log the best model, its checkpoint and the learning curve -> finish
the run. Any failure on the way marks the run FAILED.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Console

from deeprig.cluster.resources import (
    ClusterResources,
    ResourceProblems,
    WorkerBudget,
    budget_workers,
)
from deeprig.data import DataInfo, DataProblem, build_datasets, describe_data
from deeprig.data.info import Fitted
from deeprig.data.pipeline import PreparedData
from deeprig.failures import classified
from deeprig.models import InputShapeError, check_input_shape
from deeprig.runners.closing import print_metrics_table
from deeprig.runners.contract import Job, JobRun, run_job, user_frames
from deeprig.runners.fsdp_checks import (
    fsdp_problems,
    memory_estimate,
    memory_note,
    memory_problems,
)
from deeprig.runners.loop_model import log_loop_model
from deeprig.runners.stages import summary as stage_summary
from deeprig.runners.train_checked import TrainChecked, what_it_reads, what_trains
from deeprig.runners.train_metrics import (
    CLOSING_METRICS,
    LoopEpochsEnded,
    closing_metrics,
    reported_metrics,
    score_metric,
)
from deeprig.runners.train_record import (
    best_checkpoint,
    dataset_records,
    record_best_checkpoint,
    record_preprocessing,
    record_results,
)
from deeprig.runners.user_code import check_model_and_loop, collect_code
from deeprig.spec.errors import Problem, SpecError
from deeprig.spec.scaling import ScalingSpec
from deeprig.spec.train import TrainSpec
from deeprig.tracking.store import checkpoint_storage
from deeprig.tracking.tags import RunStatus, Tag

if TYPE_CHECKING:
    from ray.train import Checkpoint
    from ray.train.torch import TorchTrainer

    from deeprig.tracking.runs import RunRecorder
    from deeprig.tracking.sink import MlflowMetricsSink
    from deeprig.training.worker_config import MetricsSink, WorkerConfig

# A worker keeps its shard in memory when it is at most this big (data.cache: auto).
IN_MEMORY_SHARD_BYTES = 512 * 1024 * 1024


# What `--resume` continues after the driver died: the newest unfinished run of the job,
# from its latest checkpoint (Ray Train finds it again under the run's own name).
RESUMES = "train run"


@dataclass(frozen=True)
class TrainOutcome:
    job_name: str
    experiment: str
    run_id: str | None
    metrics: dict[str, float]
    checkpoint_path: str | None
    tracking_uri: str | None
    seconds: float
    run_url: str | None = None  # its page in MLflow's UI, where a server is known
    shown: tuple[str, ...] = CLOSING_METRICS  # what the closing table shows, in order

    def render(self, console: Console) -> None:
        print_metrics_table(
            console,
            f"{self.job_name}: best checkpoint",
            self.metrics,
            self.shown,
            self.seconds,
            self.checkpoint_path,
        )
        if timing := stage_summary(self.metrics):
            console.print(f"[dim]{timing}[/]")
        if self.run_url:
            console.print(f"MLflow run [bold]{self.run_id}[/]: {self.run_url}", soft_wrap=True)
        elif self.run_id:
            console.print(
                f"MLflow run [bold]{self.run_id}[/] ({self.tracking_uri})\n"
                f"  see it: [bold]deeprig ui --run {self.run_id}[/], or [bold]deeprig runs[/]",
                soft_wrap=True,
            )


def check(spec: TrainSpec, resources: ClusterResources) -> TrainChecked:
    """Every check that needs the data or the hardware, all problems at once (what the
    user's loop reports is checked with the spec)."""
    code, problems = collect_code(spec)
    data: DataInfo | None = None
    budget: WorkerBudget | None = None
    if not problems and spec.data is not None:
        try:
            data = describe_data(spec.data)
        except DataProblem as exc:
            problems.append(Problem(exc.path, str(exc)))
            problems += check_model_and_loop(spec, None)
    if data is not None or spec.data is None and not problems:
        problems += check_model_and_loop(spec, data)
    if data is not None:
        if spec.model is not None:
            try:
                check_input_shape(spec.model, data.input_shape, data.vocab_size, data.task)
            except InputShapeError as exc:
                problems.append(Problem(exc.field, str(exc)))
        allowed = reported_metrics(spec, data)
        for field in ("early_stopping", "checkpoint"):
            section = getattr(spec, field)
            if spec.loop is None and section is not None and section.metric not in allowed:
                problems.append(
                    Problem(
                        f"{field}.metric",
                        f"{section.metric!r} is not reported by a {data.task} job "
                        f"(one of: {', '.join(sorted(allowed))})",
                    )
                )
        train_rows_per_worker = data.num_train // spec.scaling.max_workers
        if train_rows_per_worker < 1:
            problems.append(
                Problem(
                    "scaling.num_workers",
                    f"{data.num_train} training rows cannot feed "
                    f"{spec.scaling.max_workers} workers",
                )
            )
    problems += fsdp_problems(spec, data)
    try:
        budget = budget_workers(spec.scaling, resources)
    except ResourceProblems as exc:
        problems.extend(exc.problems)
    if problems:
        raise SpecError(problems)
    assert budget is not None
    estimate = memory_estimate(spec, data)
    if memory_too_big := memory_problems(spec, estimate, resources, budget.cpus_per_worker):
        raise SpecError(memory_too_big)
    in_memory = data is not None and _keeps_shard_in_memory(spec, data)
    return TrainChecked(spec, data, budget, in_memory, code, memory_note(spec, estimate))


def _keeps_shard_in_memory(spec: TrainSpec, data: DataInfo) -> bool:
    assert spec.data is not None
    if spec.data.cache != "auto":
        return spec.data.cache == "memory"
    # (an elastic job's smallest size holds the biggest shards)
    shard_bytes = data.num_rows * data.bytes_per_row / spec.scaling.min_workers
    return shard_bytes <= IN_MEMORY_SHARD_BYTES


def run(spec: TrainSpec, job: Job) -> TrainOutcome:
    """Run a train job to the end. Raises SpecError (bad input, nothing recorded) or the
    training failure (after marking the MLflow run FAILED)."""
    return run_job(spec, job, check, _fit_and_record, resumes=RESUMES, check_resumed=_check_resumed)


def _train_run_name(spec: TrainSpec, run_id: str | None) -> str:
    """The Ray Train run of a job: named after its MLflow run, so --resume finds its
    checkpoints again."""
    return f"{spec.name}-{run_id[:8]}" if run_id else f"{spec.name}-{int(time.time())}"


def _check_resumed(spec: TrainSpec, checked: TrainChecked, run_id: str, job: Job) -> None:
    """The checkpoint --resume continues from holds this spec's model (exit 2 if not)."""
    from deeprig.runners.resume_check import resumed_checkpoint_problems

    storage = checkpoint_storage(spec.checkpoint.storage, job.home)
    run_folder = f"{storage}/{_train_run_name(spec, run_id)}"
    if problems := resumed_checkpoint_problems(spec, checked.data, run_folder):
        raise SpecError(problems)


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
    from ray.train import (
        CheckpointConfig,
        DataConfig,
        FailureConfig,
        LoggingConfig,
        RunConfig,
        ScalingConfig,
    )
    from ray.train.torch import TorchTrainer

    budget = checked.budget
    callbacks = list(callbacks or [])
    from deeprig.runners.resource_wait import WaitForResources, WorkerNeeds

    needs = WorkerNeeds(
        spec.scaling.min_workers,
        budget.cpus_per_worker,
        budget.gpus_per_worker,
        spec.scaling.placement_strategy == "STRICT_SPREAD",
    )
    callbacks.append(WaitForResources(spec.failure.wait_for_resources_s, needs))
    if spec.failure.max_failures != 0:
        from deeprig.runners.retries import EndUnlessRetried

        callbacks.append(EndUnlessRetried(spec.failure.retry_policy()))
    if sink is not None:
        from deeprig.tracking.report_logger import EpochMetricsLogger, WorldSizes

        # The user's loop reports when it likes: each report is sent as it comes.
        epochs = None if spec.loop is not None else spec.optim.num_epochs
        sizes = None
        if spec.scaling.elastic:
            sizes = WorldSizes(None if spec.loop is not None else spec.batch_per_worker)
        callbacks.append(EpochMetricsLogger(sink, epochs, sizes))
        from deeprig.runners.preemptions import CountPreemptions

        callbacks.append(CountPreemptions(sink))
        sink = sink.tags_only()
    loop, loop_config = _worker_entry(spec, checked, prepared, run_id, sink)
    return TorchTrainer(
        loop,
        train_loop_config=loop_config,
        # (Train V2's ScalingConfig, the one Ray uses, takes (min, max) workers and the
        # resize interval; the type Ray declares for `ray.train.ScalingConfig` is V1's.)
        scaling_config=ScalingConfig(  # type: ignore[call-arg]
            num_workers=ray_num_workers(spec.scaling),  # type: ignore[arg-type]
            use_gpu=spec.scaling.use_gpu,
            resources_per_worker=budget.resources_per_worker(),
            placement_strategy=spec.scaling.placement_strategy,
            elastic_resize_monitor_interval_s=spec.scaling.resize_interval_s,
        ),
        # (Train V2's RunConfig, the one Ray uses, takes logging_config; the type Ray
        # declares for `ray.train.RunConfig` is V1's, which does not.)
        run_config=RunConfig(  # type: ignore[call-arg]
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
        ),
        datasets=(
            None if prepared is None or _hands_arrays(checked, prepared) else prepared.for_trainer()
        ),
        dataset_config=DataConfig(datasets_to_split=["train", "val"]),
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


def _fit_and_record(job_run: JobRun[TrainSpec, TrainChecked]) -> TrainOutcome:
    from functools import partial

    from deeprig.progress import EpochProgress, epoch_rows
    from deeprig.tracking.sink import MlflowMetricsSink

    spec, checked, recorder, target = (
        job_run.spec,
        job_run.checked,
        job_run.recorder,
        job_run.target,
    )
    console = job_run.job.console
    started = time.perf_counter()
    run_id = recorder.run_id
    sink = MlflowMetricsSink(target.uri, run_id) if recorder and target and run_id else None
    run_name = _train_run_name(spec, run_id)
    storage = checkpoint_storage(spec.checkpoint.storage, job_run.job.home)
    callbacks: list = []
    if recorder:
        poll: Any = recorder.latest_metrics
    else:  # nothing in MLflow to read: the Train controller hands reports over a queue
        from deeprig.runners.progress_feed import LatestReport, ReportsToQueue, report_queue

        queue = report_queue()
        callbacks.append(ReportsToQueue(queue))
        poll = LatestReport(queue)
    prepared = None
    if spec.data is not None:
        console.print(f"[dim]preparing the data ({spec.data.source})...[/]")
        with job_run.clock.stage("data"):
            prepared = prepare_data(spec, checked)
    trainer = build_trainer(spec, checked, prepared, run_id, sink, storage, run_name, callbacks)
    score = score_metric(checked.data.task) if checked.data else spec.checkpoint.metric
    if not job_run.resumed:
        _record_inputs(job_run, prepared)
    console.print(
        f"Training [bold]{what_trains(spec)}[/] on {what_it_reads(spec, checked.data, True)}, "
        f"{spec.scaling.described()} worker(s) x {checked.budget.cpus_per_worker:g} CPU"
        + (" + 1 GPU" if spec.scaling.use_gpu else "")
    )
    shown = _progress_metrics(spec, score)
    # (short: at 80 columns about 38 characters are left for it)
    waiting = f"{spec.scaling.min_workers} worker(s) + epoch 1"
    if recorder and spec.loop is None:
        from deeprig.tracking.warm_up import warm_up_result_logging

        warm_up_result_logging()
    fit_started_at = time.time()
    # (off a terminal: each epoch's line, when several ended between two polls)
    history = partial(epoch_rows, recorder.metric_history, shown) if recorder else poll.history
    if spec.loop is not None:
        epochs = LoopEpochsEnded(poll, history)
        poll, history = epochs.poll, epochs.history
    with EpochProgress(
        console, _epochs_expected(spec), poll, shown, waiting_for=waiting, history=history
    ):
        result = trainer.fit()  # (a failure is classified and tagged by run_job)
    best = best_checkpoint(result, spec)
    metrics = dict(best[1]) if best else dict(result.metrics or {})
    checkpoint_path = best[0].path if best else None
    if recorder and recorder.answers():
        metrics |= _record_outcome(job_run, recorder, best, score, prepared, fit_started_at)
    elif recorder:
        metrics |= _record_while_away(job_run, recorder, best)
    return TrainOutcome(
        job_name=spec.name,
        experiment=spec.experiment_name,
        run_id=run_id,
        metrics=metrics,
        shown=closing_metrics(spec),
        checkpoint_path=checkpoint_path,
        tracking_uri=target.uri if target else None,
        # (the time line under the closing table counts from the process's start: so does it)
        seconds=metrics.get("time.total_s", time.perf_counter() - started),
        run_url=recorder.page_url(),
    )


def _progress_metrics(spec: TrainSpec, score: str) -> tuple[str, ...]:
    """The metrics the progress display shows, the score first: at 80 columns the metrics
    that do not fit are the ones dropped. (A loop's `epoch` is the counter's, not repeated
    among its metrics.)"""
    if spec.loop is None:
        return (score, "val_loss", "train_loss")
    return tuple(m for m in spec.loop.metrics if m != "epoch")


def _record_inputs(job_run: JobRun[TrainSpec, TrainChecked], prepared: PreparedData | None) -> None:
    """A new run's inputs: its datasets, its preprocessing, the effective batch size."""
    spec, checked, recorder = job_run.spec, job_run.checked, job_run.recorder
    if recorder and checked.data is not None and prepared is not None:
        from deeprig.tracking.datasets import log_datasets

        log_datasets(recorder, dataset_records(spec, checked.data))
        record_preprocessing(recorder, spec, checked.data, prepared.fitted)
    if spec.loop is None:
        recorder.log_params({"effective_batch_size": str(spec.effective_batch_size)})


def _record_outcome(
    job_run: JobRun[TrainSpec, TrainChecked],
    recorder: RunRecorder,
    best: tuple[Checkpoint, dict] | None,
    score: str,
    prepared: PreparedData | None,
    fit_started_at: float,
) -> dict[str, float]:
    """What a finished fit leaves on its run (the key metric, the best checkpoint's results
    and model, the time metrics), the run marked FINISHED; the metrics it adds."""
    spec, checked, console = job_run.spec, job_run.checked, job_run.job.console
    if spec.loop is not None and (unplaced := recorder.tags().get(Tag.UNPLACED_REPORTS)):
        console.print(
            f"[yellow]warning: {unplaced} (tag {Tag.UNPLACED_REPORTS})[/]", soft_wrap=True
        )
    if best and spec.checkpoint.metric in best[1]:
        from deeprig.tracking.key_metric import record_key_metric

        record_key_metric(recorder, spec.checkpoint.metric, best[1][spec.checkpoint.metric])
    if not job_run.resumed and spec.loop is None:
        job_run.clock.read_epochs(recorder, fit_started_at)
    metrics = record_results(recorder, spec, checked.code, best, score, console, prepared)
    if spec.loop is not None and spec.model is not None and best is not None:
        log_loop_model(recorder, spec, checked.data, checked.code, best[0], console)
    timing = job_run.clock.finished()
    recorder.log_metrics(timing)
    recorder.finish(RunStatus.FINISHED)
    return metrics | timing


def _record_while_away(
    job_run: JobRun[TrainSpec, TrainChecked],
    recorder: RunRecorder,
    best: tuple[Checkpoint, dict] | None,
) -> dict[str, float]:
    """A job that trained while its tracking server is away ends all the same: what the
    driver knows without reading the run back (the key metric, the best checkpoint's
    epoch, path and files, the time metrics, FINISHED) waits in the run's spool. The
    learning curve and the model, made from what the run holds, are left out."""
    spec = job_run.spec
    if best and spec.checkpoint.metric in best[1]:
        from deeprig.tracking.key_metric import record_key_metric

        record_key_metric(recorder, spec.checkpoint.metric, best[1][spec.checkpoint.metric])
    if best:
        checkpoint, metrics = best
        with checkpoint.as_directory() as directory:
            record_best_checkpoint(recorder, checkpoint, metrics, directory)
    timing = job_run.clock.finished()
    recorder.log_metrics(timing)
    recorder.finish(RunStatus.FINISHED)
    job_run.job.console.print(
        "[yellow]the tracking server did not answer: the run's learning curve and model "
        "were not logged (its best checkpoint was)[/]",
        soft_wrap=True,
    )
    return timing


def _epochs_expected(spec: TrainSpec) -> int | None:
    if spec.loop is None:
        return spec.optim.num_epochs
    epochs = spec.loop.config.get("epochs")
    return epochs if isinstance(epochs, int) else None
