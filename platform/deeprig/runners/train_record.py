"""What a finished (or starting) train job records beyond its metrics: the data it read as
MLflow datasets, the learning curve, the best checkpoint, and the model."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from deeprig import plots
from deeprig.cluster.session import release_ray
from deeprig.data.info import DataInfo, Fitted
from deeprig.data.sources import source_of
from deeprig.spec.train import TrainSpec
from deeprig.tracking.tags import Tag
from deeprig.training.state import TrainState

if TYPE_CHECKING:
    from ray.train import Checkpoint, Result
    from torch import nn

    from deeprig.data.pipeline import PreparedData
    from deeprig.tracking.datasets import DatasetRecord
    from deeprig.tracking.logged_model import ModelInterface
    from deeprig.tracking.runs import RunRecorder
    from deeprig.usercode import CodeBundle


def dataset_records(spec: TrainSpec, data_info: DataInfo) -> list[DatasetRecord]:
    """The job's two splits as MLflow datasets: where the rows come from, how they split."""
    from deeprig.tracking.datasets import DatasetRecord

    data = spec.data
    assert data is not None  # (only a job given data records it)
    source = source_of(data).origin(data)
    name = spec.name.split("-")[0] if data.source.startswith("builtin") else spec.name
    label = "float32" if data_info.task == "regression" else "int64"
    fingerprint = f"{data.model_dump_json()} seed={spec.seed}"
    return [
        DatasetRecord(
            f"{name}-{split}",
            context,
            str(source),
            f"{fingerprint} {split}",
            data_info.input_shape,
            label,
            rows,
        )
        for split, context, rows in (
            ("train", "training", data_info.num_train),
            ("validation", "validation", data_info.num_val),
        )
    ]


def record_preprocessing(
    recorder: RunRecorder, spec: TrainSpec, data: DataInfo, fitted: Fitted
) -> None:
    """What was fitted on the training split (preprocessing.json, tokenizer.json) and the
    class names behind the ids (the `data.classes` param), before training starts."""
    assert spec.data is not None  # (only a job given data fits preprocessing)
    record: dict[str, object] = {"source": spec.data.source, **fitted.record()}
    if data.classes:
        record["classes"] = list(data.classes)
        recorder.log_params({"data.classes": ", ".join(data.classes)})
    if fitted.tokenizer_json is not None:
        recorder.log_text(fitted.tokenizer_json, "preprocessing/tokenizer.json")
    recorder.log_dict(record, "preprocessing/preprocessing.json")


def record_results(
    recorder: RunRecorder,
    spec: TrainSpec,
    code: CodeBundle | None,
    best: tuple[Checkpoint, dict] | None,
    score: str,
    console: Console,
    prepared: PreparedData | None = None,
) -> dict[str, float]:
    """Learning curve, the best checkpoint, its confusion matrix, its test-set scores
    (returned) and the final model (the best by the spec's metric), logged from the driver
    after training. The user's loop writes checkpoints deeprig cannot read: they are
    logged as they are (its network, when the spec names one, by runners/loop_model.py).
    Ray shuts down behind it as soon as nothing left needs it (a test set may be a Ray
    dataset)."""
    best_epoch = int(best[1]["epoch"]) if best and "epoch" in best[1] else None
    title = f"{spec.name} - run {recorder.run_id[:8]}"
    if spec.loop is not None:
        losses = [m for m in spec.loop.metrics if "loss" in m]
        metric = spec.checkpoint.metric
        score_key = None if "loss" in metric else metric
        _log_learning_curve(recorder, losses, score_key, title, best_epoch)
    else:
        _log_learning_curve(recorder, ("train_loss", "val_loss"), score, title, best_epoch)
    if prepared is None or prepared.test is None:
        release_ray()  # (a test set may stream through Ray Data: scored first)
    if best is None:
        return {}
    checkpoint, metrics = best
    with checkpoint.as_directory() as directory:
        record_best_checkpoint(recorder, checkpoint, metrics, directory)
        if spec.loop is not None:
            return {}
        # (whole: a sharded checkpoint's model is gathered here, while its folder exists)
        state = TrainState.load(directory).whole()
    classes = list(state.classes or [str(i) for i in range(state.num_outputs)])
    if state.confusion_matrix is not None:
        epoch = int(metrics.get("epoch", 0))
        recorder.log_figure(
            plots.confusion_matrix(
                state.confusion_matrix, classes, f"{spec.name}: validation, epoch {epoch}"
            ),
            "plots/confusion_matrix_val.png",
        )
    test_metrics: dict[str, float] = {}
    if prepared is not None and prepared.test is not None:
        from deeprig.runners.test_set import score_test_set

        console.print("Scoring the best model on the test set ...")
        test_metrics, confusion = score_test_set(state, prepared.test)
        recorder.log_metrics(test_metrics, step=int(metrics.get("epoch", 0)))
        if confusion is not None:
            recorder.log_figure(
                plots.confusion_matrix(confusion, classes, f"{spec.name}: test set"),
                "plots/confusion_matrix_test.png",
            )
    release_ray()
    log_trained_model(recorder, state, spec.tracking.register_as, code, console)
    return test_metrics


def record_best_checkpoint(
    recorder: RunRecorder, checkpoint: Checkpoint, metrics: dict, directory: str
) -> None:
    """The best checkpoint's epoch and path as tags, its files (in `directory`, the
    checkpoint's folder on this machine) under `checkpoints/best`."""
    recorder.set_tags(
        {
            Tag.BEST_EPOCH: str(int(metrics.get("epoch", 0))),
            Tag.CHECKPOINT_PATH: checkpoint.path,
        }
    )
    recorder.log_directory(directory, "checkpoints/best")


def _log_learning_curve(
    recorder: RunRecorder,
    loss_keys: Sequence[str],
    score_key: str | None,
    title: str,
    best_epoch: int | None,
) -> None:
    """plots/learning_curve.png, from the run's own metric history."""
    keys = [*loss_keys, *([score_key] if score_key else []), "lr"]
    curves = {key: recorder.metric_history(key) for key in keys}
    figure = plots.learning_curve(curves, loss_keys, score_key, title, best_epoch)
    recorder.log_figure(figure, "plots/learning_curve.png")


def log_trained_model(
    recorder: RunRecorder,
    state: TrainState,
    register_as: str | None,
    code: CodeBundle | None = None,
    console: Console | None = None,
) -> None:
    """The checkpoint's model logged on the run with its signature (and registered),
    behind its preprocessing: it reads raw inputs (models/wrappers.py), and its pyfunc
    reads a table's columns by name and answers a classifier's label values."""
    import numpy as np

    from deeprig.tracking.logged_model import log_torch_model

    model, exportable, requirements = servable_model(state)
    dtype = np.int64 if state.input_dtype == "int64" else np.float32
    # (a wrapper that featurises raw inputs of another shape says so: audio's waveforms)
    raw_shape = tuple(getattr(model, "raw_input_shape", state.input_shape))
    sample = np.zeros((2, *raw_shape), dtype=dtype)
    code_paths = code.py_modules() if code else []
    if not exportable:  # pickled: the wrapper's class must import where it is loaded
        import deeprig

        code_paths = [*code_paths, str(Path(deeprig.__file__).parent)]
    used = log_torch_model(
        recorder,
        model,
        dataclasses.replace(model_interface(state), input_shape=raw_shape),
        sample,
        register_as,
        code_paths,
        exportable,
        requirements,
    )
    if used != "pt2" and exportable and console is not None:
        console.print(
            "[yellow]the model could not be exported with torch.export; it is logged "
            "pickled, with its code (code.paths): loading it needs the same torch[/]"
        )


def model_interface(state: TrainState) -> ModelInterface:
    """What the logged model's pyfunc reads: the feature columns by name when they are a
    table's scalar columns (one value each), sentences when it tokenises, else arrays in
    the sample's shape; a classifier answers its label values (names, or the ids)."""
    import math

    from deeprig.tracking.logged_model import ModelInterface

    data = TrainSpec.model_validate(state.spec).data
    classes: tuple[str, ...] | tuple[int, ...] | None = None
    if state.task == "classification":
        classes = tuple(state.classes) if state.classes else tuple(range(state.num_outputs))
    features = getattr(data, "features", None) or ()
    text = getattr(data, "text", None)
    if state.preprocessing().tokenizer_json is not None and text and classes is not None:
        return ModelInterface("text", state.input_shape, state.input_dtype, (text,), classes)
    if features and math.prod(state.input_shape) == len(features):
        return ModelInterface(
            "columns", state.input_shape, columns=tuple(features), classes=classes
        )
    outputs = state.num_outputs if state.task == "regression" else 1  # (a forecast's steps)
    return ModelInterface(
        "tensor", state.input_shape, state.input_dtype, classes=classes, outputs=outputs
    )


def servable_model(state: TrainState) -> tuple[nn.Module, bool, list[str]]:
    """(the model MLflow serves, whether torch.export may trace it, its extra pip
    requirements): the network behind the preprocessing it was trained with."""
    data = TrainSpec.model_validate(state.spec).data
    assert data is not None  # (a TrainState is deeprig's loop's, which always has data)
    classes = list(state.classes or [str(i) for i in range(state.num_outputs)])
    return source_of(data).serve(state.rebuild_model(), state.preprocessing(), data, classes)


def best_checkpoint(result: Result, spec: TrainSpec) -> tuple[Checkpoint, dict] | None:
    """The checkpoint kept as best by the spec's metric (mid-epoch step checkpoints are
    not candidates), with its metrics; the latest when none carries the metric."""
    from deeprig.report_keys import STEP_CHECKPOINT

    ranked = [
        (c, m)
        for c, m in (result.best_checkpoints or [])
        if spec.checkpoint.metric in m and STEP_CHECKPOINT not in m
    ]
    if not ranked:
        return (result.checkpoint, result.metrics or {}) if result.checkpoint else None
    sign = 1 if spec.checkpoint.mode == "min" else -1
    return min(ranked, key=lambda cm: sign * cm[1][spec.checkpoint.metric])
