"""`kind: predict` (and `deeprig predict`): a trained model scores a table on Ray Data.

Before Ray starts, the model is found (tracking/model_source.py, or a train checkpoint
folder) and the input checked against what its pyfunc reads (the feature columns, or the
text column; numbers, or text); the output must be new (or `overwrite`) in a writable
folder. Then the rows stream: read_parquet/read_csv -> `map_batches` over a pool of
`workers` actors, each loading the model once -> the driver appends each batch to a
temporary file beside the output, renamed to it at the end (an interrupted job leaves no
file under the output's name). With the label column present, the rows' scores are
accumulated on the way (a train job's validation scores, tracked in one pass)."""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deeprig.spec.errors import Problem, SpecError
from deeprig.spec.predict import PredictSpec

if TYPE_CHECKING:
    from rich.console import Console

    from deeprig.cluster.resources import ClusterResources
    from deeprig.runners.contract import Job, JobRun

RESUMES = None  # a predict job is rerun, not resumed: its output is written at the end


@dataclass(frozen=True)
class PredictModel:
    """The model a predict job uses: an MLflow model URI or a train checkpoint folder,
    what its pyfunc reads and answers (tracking/torch_pyfunc.py's config), the label column
    it trained on, and its lineage."""

    uri: str | None  # mlflow.pyfunc.load_model's; None: `checkpoint`
    checkpoint: str | None
    config: dict[str, Any]
    label: str | None
    experiment: str
    lineage: dict[str, str]

    @property
    def classes(self) -> list[Any] | None:
        classes = self.config.get("classes")
        return list(classes) if classes is not None else None

    def reads(self) -> list[str]:
        """The input columns the model needs."""
        return list(self.config.get("columns") or [])


def find_model(spec: PredictSpec, tracking_uri: str | None = None) -> PredictModel:
    """The model `spec.model` names; SpecError on `model` when there is none or it cannot
    score a table."""
    from deeprig.tracking.resolve import resolve_tracking

    folder = Path(spec.model)
    if folder.is_dir():
        model = _checkpoint_model(folder)
    else:
        from deeprig.tracking.model_source import parse_model_ref, resolve_model

        try:
            ref = parse_model_ref(spec.model)
        except ValueError as exc:
            raise SpecError([Problem("model", str(exc))]) from None
        found = resolve_model(ref, resolve_tracking(tracking_uri or spec.tracking.uri))
        model = PredictModel(
            found.uri, None, found.config, found.label, found.experiment, found.lineage_tags()
        )
    if model.config.get("inputs") not in ("columns", "text"):
        raise SpecError(
            [
                Problem(
                    "model",
                    "this model reads arrays (images, audio, series windows): predict scores "
                    "tables (feature columns) and text so far",
                )
            ]
        )
    return model


def _checkpoint_model(folder: Path) -> PredictModel:
    from deeprig.runners.train_record import model_interface
    from deeprig.spec.train import TrainSpec
    from deeprig.tracking.tags import Tag
    from deeprig.training.state import TrainState

    if not (folder / "checkpoint.pt").exists():
        raise SpecError(
            [Problem("model", f"{folder} holds no checkpoint.pt: not a train checkpoint folder")]
        )
    state = TrainState.load(folder)
    trained = TrainSpec.model_validate(state.spec)
    lineage = {Tag.MODEL_URI: str(folder.resolve())}
    if state.run_id:
        lineage[Tag.MODEL_RUN_ID] = state.run_id
    return PredictModel(
        None,
        str(folder.resolve()),
        model_interface(state).config(),
        getattr(trained.data, "label", None),
        trained.experiment_name,
        lineage,
    )


@dataclass(frozen=True)
class InputTable:
    """What the driver learned of the input before Ray starts."""

    files: list[str]
    columns: dict[str, str]  # the columns read: name -> Arrow type
    rows: int
    label: str | None  # the model's label column, when the input has it


@dataclass(frozen=True)
class PredictChecked:
    model: PredictModel
    table: InputTable
    actor_cpus: float  # each actor's CPUs: what leaves room for Ray Data's reads

    @property
    def summary(self) -> str:
        classes = self.model.classes
        what = f"a classifier of {len(classes)} classes" if classes else "a regression"
        return (
            f"{what} reading {len(self.model.reads())} column(s); "
            f"{self.table.rows:,} rows to score"
            + (f", labelled ({self.table.label})" if self.table.label else "")
        )


def check(spec: PredictSpec, resources: ClusterResources) -> PredictChecked:
    model = find_model(spec)
    table = check_input(spec, model)
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
    # One CPU stays free for the reads; the actors share the rest (at most one each).
    actor_cpus = min(1.0, max(resources.cpus - 1.0, 0.2) / spec.workers)
    return PredictChecked(model, table, round(actor_cpus, 2))


def check_input(spec: PredictSpec, model: PredictModel) -> InputTable:
    """The input's columns against the model's: missing ones, wrong types, no rows."""
    import pyarrow as pa

    from deeprig.data.info import DataProblem
    from deeprig.data.parquet import open_table

    try:
        dataset = open_table(spec.input, field="input")
    except DataProblem as exc:
        raise SpecError([Problem(exc.path, str(exc))]) from None
    schema = dataset.schema
    reads = model.reads()
    problems = []
    missing = [c for c in reads if c not in schema.names]
    if missing:
        problems.append(
            Problem(
                "input",
                f"column(s) {missing} missing from {spec.input!r}: the model reads "
                f"{', '.join(reads)} (the input has {', '.join(schema.names[:20])})",
            )
        )
    rows = dataset.count_rows()
    if rows == 0:
        raise SpecError([Problem("input", f"{spec.input!r} holds no rows")])
    wants_text = model.config.get("inputs") == "text"
    wrong = []
    for name in (c for c in reads if c in schema.names):
        kind = schema.field(name).type
        numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
        text = pa.types.is_string(kind) or pa.types.is_large_string(kind)
        if (text if wants_text else numeric or pa.types.is_boolean(kind)) is False:
            wrong.append(f"{name} ({kind})")
    if wrong:
        needed = "text" if wants_text else "numbers"
        problems.append(Problem("input", f"column(s) {', '.join(wrong)} hold no {needed}"))
    absent_ids = [c for c in spec.id_columns if c not in schema.names]
    if absent_ids:
        problems.append(Problem("id_columns", f"column(s) {absent_ids} not in {spec.input!r}"))
    if problems:
        raise SpecError(problems)
    label = model.label if model.label in schema.names else None
    names = [*spec.id_columns, *reads, *([label] if label else [])]
    columns = {n: str(schema.field(n).type) for n in dict.fromkeys(names)}
    return InputTable(list(dataset.files), columns, rows, label)


def check_output(spec: PredictSpec) -> None:
    output = Path(spec.output)
    if output.exists() and not spec.overwrite:
        raise SpecError(
            [
                Problem(
                    "output",
                    f"{output} exists; choose another path or replace it with --overwrite "
                    "(overwrite: true)",
                )
            ]
        )
    folder = output.resolve().parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise SpecError([Problem("output", f"cannot write in {folder}: not a writable folder")])


def output_columns(model: PredictModel, spec: PredictSpec, label: str | None) -> list[str]:
    """The output's columns, in order: the id columns, the label (when the input had it),
    `prediction`, and with `proba` one proba_<class> per class."""
    columns = [*spec.id_columns]
    if label and label not in columns:
        columns.append(label)
    columns.append("prediction")
    if spec.proba and model.classes is not None:
        columns += [f"proba_{c}" for c in model.classes]
    return columns


class Predictor:
    """One actor of the pool: the model loaded once, then a batch of rows in, the output
    columns out."""

    def __init__(
        self,
        model: PredictModel,
        tracking_uri: str | None,
        columns: list[str],
        threads: int,
    ):
        import torch

        torch.set_num_threads(threads)
        self.model = model
        self.columns = columns
        self.pyfunc = _load(model, tracking_uri)

    def __call__(self, batch: Any) -> Any:
        return predict_frame(self.pyfunc, self.model, batch, self.columns)


def _load(model: PredictModel, tracking_uri: str | None) -> Any:
    if model.uri is not None:
        from deeprig.tracking.model_source import load_pyfunc

        assert tracking_uri is not None
        return load_pyfunc(model.uri, tracking_uri)
    from deeprig.runners.train_record import servable_model
    from deeprig.tracking.torch_pyfunc import TorchPyfunc
    from deeprig.training.state import TrainState

    assert model.checkpoint is not None
    network, _, _ = servable_model(TrainState.load(model.checkpoint))
    return TorchPyfunc(network.eval(), model.config)


def predict_frame(pyfunc: Any, model: PredictModel, batch: Any, columns: list[str]) -> Any:
    """`batch` (a DataFrame of input rows) scored: a DataFrame of `columns`."""
    import numpy as np
    import pandas as pd

    features = batch[model.reads()]
    out = pd.DataFrame(index=batch.index)
    for name in columns:
        if name in batch.columns:
            out[name] = batch[name]
    classes = model.classes
    if classes is None:
        values = np.asarray(pyfunc.predict(features))
        out["prediction"] = values if values.ndim == 1 else list(values)
        return out
    probabilities = pyfunc.predict(features, params={"proba": True}).to_numpy()
    out["prediction"] = np.asarray(classes)[probabilities.argmax(axis=1)]
    for i, name in enumerate(classes):
        if f"proba_{name}" in columns:
            out[f"proba_{name}"] = probabilities[:, i]
    return out.reset_index(drop=True)


@dataclass
class Scores:
    """A labelled input's scores, accumulated batch by batch: a train job's validation
    scores (accuracy, f1_macro, auc for two classes / rmse, mae)."""

    classes: list[Any] | None
    rows: int = 0
    unknown: int = 0  # labels that are no class of the model's
    squared: float = 0.0
    absolute: float = 0.0
    _class_scores: Any = None

    def add(self, labels: Any, predictions: Any, probabilities: Any | None) -> None:
        import numpy as np

        if self.classes is None:
            error = np.asarray(predictions, dtype=np.float64) - np.asarray(labels, np.float64)
            self.rows += len(error)
            self.squared += float((error**2).sum())
            self.absolute += float(np.abs(error).sum())
            return
        import torch

        from deeprig.training.scores import ClassScores

        if self._class_scores is None:
            self._class_scores = ClassScores(len(self.classes), torch.device("cpu"))
        ids = {str(c): i for i, c in enumerate(self.classes)}
        label_ids = np.array([ids.get(str(v), -1) for v in labels])
        known = label_ids >= 0
        self.unknown += int((~known).sum())
        self.rows += int(known.sum())
        if known.any():
            logits = torch.log(torch.as_tensor(np.asarray(probabilities)[known]) + 1e-12)
            self._class_scores.update(logits, torch.as_tensor(label_ids[known]))

    def compute(self) -> tuple[dict[str, float], list[list[int]] | None]:
        if self.rows == 0:
            return {}, None
        if self.classes is None:
            return {
                "rmse": math.sqrt(self.squared / self.rows),
                "mae": self.absolute / self.rows,
            }, None
        metrics, confusion = self._class_scores.compute(world_size=1)
        correct = sum(confusion[i][i] for i in range(len(confusion)))
        metrics = {"accuracy": correct / self.rows, **metrics}
        if self.unknown:
            metrics["rows_unknown_label"] = float(self.unknown)
        return metrics, confusion


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
        shown = [k for k in ("accuracy", "f1_macro", "auc", "rmse", "mae") if k in m]
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

    spec, checked, recorder = job_run.spec, job_run.checked, job_run.recorder
    model, table = checked.model, checked.table
    columns = output_columns(model, spec, table.label)
    if recorder:  # (a NullRecorder, falsy, when tracking is off)
        from deeprig.tracking.predict_record import input_digest, log_input

        recorder.set_tags(model.lineage)
        log_input(recorder, spec.input, input_digest(table.files), table.columns, table.rows)
    scores = Scores(model.classes) if table.label else None
    kept: list[pa.Table] = []
    started = time.time()
    with job_run.clock.stage("predict"), _Writer(spec.output) as writer:
        progress = _Progress(job_run.job.console, table.rows)
        for batch in _scored_batches(spec, checked, job_run):
            if scores is not None and table.label:
                probabilities = None
                if model.classes is not None:
                    probabilities = _probabilities(batch, model)
                scores.add(
                    batch.column(table.label).to_pylist(),
                    batch.column("prediction").to_numpy(zero_copy_only=False),
                    probabilities,
                )
            batch = batch.select(columns)
            writer.write(batch)
            if keep_frame:
                kept.append(batch)
            progress.advance(batch.num_rows)
        progress.close()
    seconds = time.time() - started
    metrics = {"rows": float(progress.rows), "rows_per_s": progress.rows / max(seconds, 1e-9)}
    metrics["time.predict_s"] = job_run.clock.seconds["predict"]
    score_metrics, confusion = scores.compute() if scores is not None else ({}, None)
    metrics |= job_run.clock.finished()
    notes = []
    if recorder:
        from deeprig.tracking.predict_record import record_output, record_scores
        from deeprig.tracking.tags import RunStatus

        if score_metrics:
            classes = [str(c) for c in model.classes or []]
            record_scores(recorder, score_metrics, confusion, classes)
        if record_output(recorder, spec.output, spec.log_output):
            notes.append("the output is logged on the run under output/")
        recorder.log_metrics({k: v for k, v in metrics.items()})
        recorder.finish(RunStatus.FINISHED)
    frame = pa.concat_tables(kept).to_pandas() if keep_frame and kept else None
    return PredictOutcome(
        spec.name,
        recorder.run_id if recorder else None,
        spec.output,
        metrics | score_metrics,
        frame,
        notes,
    )


def _probabilities(batch: Any, model: PredictModel) -> Any:
    import numpy as np

    names = [f"proba_{c}" for c in model.classes or []]
    return np.stack([batch.column(n).to_numpy() for n in names], axis=1)


def _scored_batches(spec: PredictSpec, checked: PredictChecked, job_run: JobRun) -> Any:
    """The scored rows as Arrow tables, in the input's order, as the actors finish them."""
    from ray.data import DataContext

    from deeprig.data.parquet import read_rows

    model, table = checked.model, checked.table
    wanted = list(table.columns)
    # (scoring a labelled input needs every class's probability, kept or not)
    scored = table.label is not None and model.classes is not None
    columns = output_columns(
        model, spec.model_copy(update={"proba": spec.proba or scored}), table.label
    )
    context = DataContext.get_current()
    # (the output's rows in the input's order: a row's id columns are enough to join)
    saved, context.execution_options.preserve_order = (
        context.execution_options.preserve_order,
        True,
    )
    try:
        dataset = read_rows(spec.input, wanted).map_batches(
            Predictor,
            fn_constructor_kwargs=dict(
                model=model,
                tracking_uri=job_run.target.uri if job_run.target else _store_uri(spec),
                columns=columns,
                threads=max(1, int(checked.actor_cpus)),
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
    from deeprig.tracking.resolve import resolve_tracking

    return resolve_tracking(spec.tracking.uri).uri


class _Writer:
    """Arrow batches appended to a hidden temporary file beside `path` (Parquet, or CSV
    for a .csv path), renamed to `path` when the block ends without an error; removed
    otherwise."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.temporary = self.path.with_name(f".{self.path.name}.partial-{os.getpid()}")
        self.csv = self.path.suffix.lower() == ".csv"
        self.writer: Any = None
        self.schema: Any = None

    def __enter__(self) -> _Writer:
        return self

    def write(self, batch: Any) -> None:
        if self.writer is None:
            self.schema = batch.schema
            if self.csv:
                import pyarrow.csv as pacsv

                self.writer = pacsv.CSVWriter(str(self.temporary), self.schema)
            else:
                import pyarrow.parquet as pq

                self.writer = pq.ParquetWriter(str(self.temporary), self.schema)
        self.writer.write_table(batch.cast(self.schema))

    def __exit__(self, kind: Any, *rest: Any) -> None:
        if self.writer is not None:
            self.writer.close()
        if kind is None and self.writer is not None:
            os.replace(self.temporary, self.path)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.temporary.unlink()


class _Progress:
    """Rows done, rows/s and the time left: one line kept current on a terminal, a plain
    line every 10 s off one."""

    def __init__(self, console: Console, total: int):
        self.console, self.total = console, total
        self.rows, self.started, self.shown = 0, time.time(), 0.0

    def advance(self, rows: int) -> None:
        self.rows += rows
        now = time.time()
        every = 0.5 if self.console.is_terminal else 10.0
        if now - self.shown >= every:
            self.shown = now
            self._show(now, end="\r" if self.console.is_terminal else "\n")

    def close(self) -> None:
        self._show(time.time(), end="\n")

    def _show(self, now: float, end: str) -> None:
        rate = self.rows / max(now - self.started, 1e-9)
        left = (self.total - self.rows) / rate if rate > 0 else float("nan")
        self.console.print(
            f"predict: {self.rows:,}/{self.total:,} rows, {rate:,.0f} rows/s, "
            f"{max(left, 0):.0f} s left",
            end=end,
            highlight=False,
        )


def predict_spec(model: str, input: str, output: str, **options: Any) -> PredictSpec:
    """The `kind: predict` spec of a `deeprig predict` command line or a `deeprig.predict`
    call (options: the spec's fields, `experiment` and `tracking_uri` among them);
    SpecError naming the fields at fault."""
    from deeprig.spec.loader import validate_mapping

    experiment = options.pop("experiment", None)
    tracking_uri = options.pop("tracking_uri", None)
    raw: dict[str, Any] = {"kind": "predict", "model": model, "input": input, "output": output}
    raw |= {k: v for k, v in options.items() if v is not None}
    tracking = {k: v for k, v in (("experiment", experiment), ("uri", tracking_uri)) if v}
    if tracking:
        raw["tracking"] = tracking
    spec = validate_mapping(raw)
    assert isinstance(spec, PredictSpec)
    return spec


def command_job(spec: PredictSpec, console: Console, address: str | None, verbose: bool) -> Job:
    """The Job of a predict spec made from arguments: its YAML is what the run records, so
    `deeprig run` of that file repeats it."""
    import yaml

    from deeprig.runners.contract import Job

    text = "# deeprig predict\n" + yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
    return Job(
        spec_text=text,
        spec_path=Path("deeprig-predict"),
        address=address,
        verbose=verbose,
        console=console,
    )
