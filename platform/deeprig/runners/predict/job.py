"""A predict job from its spec to its outcome: the checks before Ray starts (the model,
its reader's input, the output), then the rows streamed through `map_batches` over an
actor pool to the output writer, the progress bar and a labelled input's scores, and
what the run records at the end."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from deeprig.runners.predict.inputs import PredictInput, Reader
from deeprig.runners.predict.model import PredictModel, find_model
from deeprig.runners.predict.readers import reader_of
from deeprig.runners.predict.scorer import Predictor, output_columns
from deeprig.runners.predict.writer import check_output
from deeprig.spec.errors import Problem, SpecError
from deeprig.spec.predict import PredictSpec

if TYPE_CHECKING:
    from rich.console import Console

    from deeprig.cluster.resources import ClusterResources
    from deeprig.runners.contract import Job, JobRun
    from deeprig.tracking.runs import RunRecorder

RESUMES = None  # a predict job is rerun, not resumed: its output is written at the end


@dataclass(frozen=True)
class PredictChecked:
    model: PredictModel
    reader: Reader
    input: PredictInput
    actor_cpus: float  # each actor's CPUs: what leaves room for Ray Data's reads

    @property
    def actor_threads(self) -> int:
        """torch's threads in each actor: one per CPU it holds, at least one."""
        return max(1, round(self.actor_cpus))

    @property
    def summary(self) -> str:
        classes = self.model.classes
        what = f"a classifier of {len(classes)} classes" if classes else "a regression"
        return f"{what}; {self.input.rows:,} rows to score" + (
            f", labelled ({self.input.label})" if self.input.label else ""
        )


def check(spec: PredictSpec, resources: ClusterResources) -> PredictChecked:
    model = find_model(spec)
    reader = reader_of(model)
    found = reader.check(spec, model)
    check_output(spec)
    if spec.gpus_per_worker and spec.gpus_per_worker * spec.workers > resources.gpus:
        raise SpecError(
            [
                Problem(
                    "gpus_per_worker",
                    f"{spec.workers} worker(s) x {spec.gpus_per_worker} GPU need more than "
                    f"the {resources.gpus:g} GPU(s) on {resources.where}",
                )
            ]
        )
    # The reader's read tasks keep their CPUs; the actors share the rest, each on one node.
    free = max(resources.cpus - reader.read_cpus, 0.2)
    actor_cpus = min(resources.max_node_cpus, free / spec.workers)
    return PredictChecked(model, reader, found, round(actor_cpus, 2))


@dataclass
class PredictOutcome:
    job_name: str
    run_id: str | None
    output: str
    metrics: dict[str, float]
    frame: Any = None  # the predictions, when asked for in memory (deeprig.predict)
    notes: list[str] = field(default_factory=list)

    def render(self, console: Console) -> None:
        m = self.metrics
        console.print(
            f"[green]done[/] {self.job_name}: {int(m['rows']):,} rows -> {self.output} "
            f"({m['rows_per_s']:,.0f} rows/s, {m['time.total_s']:.1f} s)"
        )
        scores = ("accuracy", "f1_macro", "auc", "rmse", "mae", "rmse_all_steps")
        shown = [k for k in scores if k in m]
        if shown:
            console.print("scores: " + ", ".join(f"{k} {m[k]:.4f}" for k in shown))
        for note in self.notes:
            console.print(note)
        if self.run_id:
            console.print(f"MLflow run [bold]{self.run_id}[/]")


def run(spec: PredictSpec, job: Job, keep_frame: bool = False) -> PredictOutcome:
    from deeprig.runners.contract import run_job

    model = find_model(spec)  # (its experiment is where the predict run goes)
    if spec.tracking.experiment is None:
        spec = spec.model_copy(
            update={"tracking": spec.tracking.model_copy(update={"experiment": model.experiment})}
        )
    return run_job(spec, job, check, lambda job_run: _body(job_run, keep_frame))


def _body(job_run: JobRun[PredictSpec, PredictChecked], keep_frame: bool) -> PredictOutcome:
    import pyarrow as pa

    from deeprig.runners.predict.progress import Progress
    from deeprig.runners.predict.scores import Scores
    from deeprig.runners.predict.timing import StreamTiming
    from deeprig.runners.predict.writer import OutputWriter

    spec, checked, recorder = job_run.spec, job_run.checked, job_run.recorder
    model, found = checked.model, checked.input
    columns = output_columns(model, spec, found)
    if recorder:  # (a NullRecorder, falsy, when tracking is off)
        from deeprig.tracking.predict_record import input_digest, log_input

        recorder.set_tags(model.lineage)
        log_input(recorder, spec.input, input_digest(found.files), found.columns, found.rows)
    scores = Scores(model.classes) if found.label else None
    skipped = _SkippedRows(spec.skip_bad_rows)
    kept: list[pa.Table] = []
    started = time.time()
    timing = StreamTiming(started)
    with job_run.clock.stage("predict"), OutputWriter(spec.output) as writer:
        progress = Progress(job_run.job.console, found.rows)
        for batch in _scored_batches(spec, checked, job_run, skipped.queue):
            timing.add(batch)
            if scores is not None and found.label and batch.num_rows:
                probabilities = None
                if model.classes is not None:
                    probabilities = _probabilities(batch, model)
                scores.add(
                    _answers(batch, found.label_columns),
                    _answers(batch, found.predictions),
                    probabilities,
                )
            if batch.num_rows:
                batch = batch.select(columns)
                writing = time.time()
                writer.write(batch)
                timing.write_s += time.time() - writing
                if keep_frame:
                    kept.append(batch)
            progress.advance(batch.num_rows, skipped.drain())
        progress.close()
    skipped.drain()
    seconds = time.time() - started
    metrics = {"rows": float(progress.rows), "rows_per_s": progress.rows / max(seconds, 1e-9)}
    metrics |= timing.metrics()
    if spec.skip_bad_rows:
        metrics["rows_skipped"] = float(len(skipped.rows))
    metrics["time.predict_s"] = job_run.clock.seconds["predict"]
    score_metrics, confusion = scores.compute() if scores is not None else ({}, None)
    metrics |= job_run.clock.finished()
    notes = []
    if skipped.rows:
        notes.append(
            f"[yellow]{len(skipped.rows)} unreadable row(s) skipped[/], the first: "
            f"{skipped.rows[0][0]} ({skipped.rows[0][1]})"
        )
    if recorder:
        notes += _record_end(recorder, job_run, metrics, (score_metrics, confusion), skipped.rows)
    frame = pa.concat_tables(kept).to_pandas() if keep_frame and kept else None
    return PredictOutcome(
        spec.name,
        recorder.run_id if recorder else None,
        spec.output,
        metrics | score_metrics,
        frame,
        notes,
    )


def _record_end(
    recorder: RunRecorder,
    job_run: JobRun[PredictSpec, PredictChecked],
    metrics: dict[str, float],
    scored: tuple[dict[str, float], Any],
    skipped_rows: list[tuple[str, str]],
) -> list[str]:
    """The finished job on its run: the scores of a labelled input, the rows skipped, the
    output (when small enough), the metrics, FINISHED. What it logged, as notes to print."""
    from deeprig.tracking.predict_record import record_output, record_scores, record_skipped
    from deeprig.tracking.tags import RunStatus

    spec, model = job_run.spec, job_run.checked.model
    score_metrics, confusion = scored
    notes = []
    if score_metrics:
        classes = [str(c) for c in model.classes or []]
        record_scores(recorder, score_metrics, confusion, classes)
    if skipped_rows:
        record_skipped(recorder, skipped_rows)
        notes.append("the rows skipped are listed on the run in skipped_rows.csv")
    if record_output(recorder, spec.output, spec.log_output):
        notes.append("the output is logged on the run under output/")
    recorder.log_metrics(dict(metrics))
    recorder.finish(RunStatus.FINISHED)
    return notes


class _SkippedRows:
    """The rows the actors left out (`skip_bad_rows`): (name, why), over a Ray queue."""

    def __init__(self, wanted: bool):
        self.rows: list[tuple[str, str]] = []
        self.queue: Any = None
        if wanted:
            from deeprig.runners.progress_feed import report_queue

            self.queue = report_queue()

    def drain(self) -> int:
        """The rows that arrived since the last call, kept; how many."""
        if self.queue is None:
            return 0
        before = len(self.rows)
        while not self.queue.empty():
            self.rows.extend(self.queue.get_nowait())
        return len(self.rows) - before


def _answers(batch: Any, names: list[str]) -> Any:
    """One column's values, or a forecast's columns as (rows, steps) floats (null: NaN)."""
    import numpy as np

    if len(names) == 1:
        return batch.column(names[0]).to_pylist()
    return np.stack([batch.column(n).to_numpy(zero_copy_only=False) for n in names], axis=1)


def _probabilities(batch: Any, model: PredictModel) -> Any:
    import numpy as np

    names = [f"proba_{c}" for c in model.classes or []]
    return np.stack([batch.column(n).to_numpy() for n in names], axis=1)


def _scored_batches(
    spec: PredictSpec, checked: PredictChecked, job_run: JobRun, skipped: Any
) -> Iterator[Any]:
    """The scored rows as Arrow tables, in the input's order, as the actors finish them."""
    from ray.data import DataContext

    model, found = checked.model, checked.input
    # (scoring a labelled input needs every class's probability, kept or not)
    scored = found.label is not None and model.classes is not None
    columns = output_columns(model, spec.model_copy(update={"proba": spec.proba or scored}), found)
    context = DataContext.get_current()
    # (the output's rows in the input's order: a row's id columns are enough to join)
    saved, context.execution_options.preserve_order = (
        context.execution_options.preserve_order,
        True,
    )
    try:
        dataset = checked.reader.rows(spec, model, found, checked.reader.read_cpus).map_batches(
            Predictor,
            fn_constructor_kwargs=dict(
                model=model,
                reader=checked.reader,
                key=found.key,
                tracking_uri=job_run.target.uri if job_run.target else _store_uri(spec),
                columns=columns,
                threads=checked.actor_threads,
                skipped=skipped,
                predictions=tuple(found.predictions),
            ),
            batch_size=spec.batch_size,
            batch_format="pandas",
            concurrency=spec.workers,
            num_cpus=checked.actor_cpus,
            num_gpus=spec.gpus_per_worker or None,
        )
        yield from dataset.iter_batches(batch_size=None, batch_format="pyarrow")
    finally:
        context.execution_options.preserve_order = saved


def _store_uri(spec: PredictSpec) -> str:
    from deeprig.cluster.tracking_target import resolve_tracking

    return resolve_tracking(spec.tracking.uri).uri
