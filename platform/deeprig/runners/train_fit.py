"""A checked train job fitted and recorded (Ray is up, its MLflow run open): its data
prepared, its inputs recorded, `trainer.fit()` under the epoch progress display, then what
the best checkpoint leaves on the run, which is marked FINISHED. A failure on the way is
classified and the run marked FAILED by runners/contract.py's `run_job`."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from deeprig.runners.contract import JobRun
from deeprig.runners.loop_model import log_loop_model
from deeprig.runners.train_checked import TrainChecked, what_it_reads, what_trains
from deeprig.runners.train_metrics import LoopEpochsEnded, closing_metrics, score_metric
from deeprig.runners.train_outcome import TrainOutcome
from deeprig.runners.train_record import (
    best_checkpoint,
    dataset_records,
    record_best_checkpoint,
    record_preprocessing,
    record_results,
)
from deeprig.runners.train_trainer import build_trainer, prepare_data, train_run_name
from deeprig.spec.train import TrainSpec
from deeprig.tracking.store import checkpoint_storage
from deeprig.tracking.tags import RunStatus, Tag

if TYPE_CHECKING:
    from ray.train import Checkpoint

    from deeprig.data.pipeline import PreparedData
    from deeprig.tracking.runs import RunRecorder


def fit_and_record(job_run: JobRun[TrainSpec, TrainChecked]) -> TrainOutcome:
    """The train job's body under `run_job`: fit, then record what the best checkpoint left."""
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
    run_name = train_run_name(spec, run_id)
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
        # (the time line under the closing table counts from the job's start: so does it)
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


def _epochs_expected(spec: TrainSpec) -> int | None:
    if spec.loop is None:
        return spec.optim.num_epochs
    epochs = spec.loop.config.get("epochs")
    return epochs if isinstance(epochs, int) else None


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
    _record_key_metric(spec, recorder, best)
    if not job_run.resumed and spec.loop is None:
        job_run.clock.read_epochs(recorder, fit_started_at)
    metrics = record_results(recorder, spec, checked.code, best, score, console, prepared)
    if spec.loop is not None and spec.model is not None and best is not None:
        log_loop_model(recorder, spec, checked.data, checked.code, best[0], console)
    return metrics | _finish(job_run, recorder)


def _record_while_away(
    job_run: JobRun[TrainSpec, TrainChecked],
    recorder: RunRecorder,
    best: tuple[Checkpoint, dict] | None,
) -> dict[str, float]:
    """A job that trained while its tracking server is away ends all the same: what the
    driver knows without reading the run back (the key metric, the best checkpoint's
    epoch, path and files, the time metrics, FINISHED) waits in the run's spool. The
    learning curve and the model, made from what the run holds, are left out."""
    _record_key_metric(job_run.spec, recorder, best)
    if best:
        checkpoint, metrics = best
        with checkpoint.as_directory() as directory:
            record_best_checkpoint(recorder, checkpoint, metrics, directory)
    timing = _finish(job_run, recorder)
    job_run.job.console.print(
        "[yellow]the tracking server did not answer: the run's learning curve and model "
        "were not logged (its best checkpoint was)[/]",
        soft_wrap=True,
    )
    return timing


def _record_key_metric(
    spec: TrainSpec, recorder: RunRecorder, best: tuple[Checkpoint, dict] | None
) -> None:
    """The best checkpoint's value of the checkpoint metric, as the run's key metric."""
    if best and spec.checkpoint.metric in best[1]:
        from deeprig.tracking.key_metric import record_key_metric

        record_key_metric(recorder, spec.checkpoint.metric, best[1][spec.checkpoint.metric])


def _finish(job_run: JobRun[TrainSpec, TrainChecked], recorder: RunRecorder) -> dict[str, float]:
    """The job's time metrics logged and its run marked FINISHED; those metrics."""
    timing = job_run.clock.finished()
    recorder.log_metrics(timing)
    recorder.finish(RunStatus.FINISHED)
    return timing
