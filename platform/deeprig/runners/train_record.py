"""What a finished (or starting) train job records beyond its metrics: the data it read as
MLflow datasets, the learning curve, the best checkpoint, and the model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console

from deeprig.data.info import DataInfo
from deeprig.spec.train import TrainSpec
from deeprig.tracking.tags import Tag
from deeprig.training.state import TrainState

if TYPE_CHECKING:
    from ray.train import Checkpoint

    from deeprig.tracking.datasets import DatasetRecord
    from deeprig.tracking.runs import RunRecorder
    from deeprig.usercode import CodeBundle


def dataset_records(spec: TrainSpec, data_info: DataInfo) -> list[DatasetRecord]:
    """The job's two splits as MLflow datasets: where the rows come from, how they split."""
    from deeprig.tracking.datasets import DatasetRecord

    data = spec.data
    source = (
        {
            "builtin:digits": "sklearn.datasets:load_digits",
            "builtin:synthetic": "deeprig.data.builtin:synthetic_arrays",
        }.get(data.source)
        or getattr(data, "path", None)
        or getattr(data, "target", data.source)
    )
    name = spec.name.split("-")[0] if data.source.startswith("builtin") else spec.name
    label = "int64" if data_info.task == "classification" else "float32"
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


def record_results(
    recorder: RunRecorder,
    spec: TrainSpec,
    code: CodeBundle | None,
    best: tuple[Checkpoint, dict] | None,
    score: str,
    console: Console,
) -> None:
    """Learning curve, the best checkpoint and the final model (the best by the spec's
    metric), logged from the driver after training. The user's loop writes checkpoints
    deeprig cannot read: they are logged as they are, without a model."""
    best_epoch = int(best[1]["epoch"]) if best and "epoch" in best[1] else None
    title = f"{spec.name} - run {recorder.run_id[:8]}"
    if spec.loop is not None:
        losses = [m for m in spec.loop.metrics if "loss" in m]
        metric = spec.checkpoint.metric
        score_key = None if "loss" in metric else metric
        recorder.log_learning_curve(losses, score_key, title, best_epoch)
    else:
        recorder.log_learning_curve(("train_loss", "val_loss"), score, title, best_epoch)
    if best is None:
        return
    checkpoint, metrics = best
    recorder.set_tags(
        {
            Tag.BEST_EPOCH: str(int(metrics.get("epoch", 0))),
            Tag.CHECKPOINT_PATH: checkpoint.path,
        }
    )
    with checkpoint.as_directory() as directory:
        recorder.log_directory(directory, "checkpoints/best")
        if spec.loop is not None:
            return
        state = TrainState.load(directory)
    log_trained_model(recorder, state, spec.tracking.register_as, code, console)


def log_trained_model(
    recorder: RunRecorder,
    state: TrainState,
    register_as: str | None,
    code: CodeBundle | None = None,
    console: Console | None = None,
) -> None:
    """The checkpoint's model logged on the run with its signature (and registered)."""
    import numpy as np

    sample = np.zeros((2, *state.input_shape), dtype=np.float32)
    code_paths = code.py_modules() if code else None
    used = recorder.log_torch_model(state.rebuild_model(), sample, register_as, code_paths)
    if used != "pt2" and console is not None:
        console.print(
            "[yellow]the model could not be exported with torch.export; it is logged "
            "pickled, with its code (code.paths): loading it needs the same torch[/]"
        )
