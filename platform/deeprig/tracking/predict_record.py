"""What a predict job records on its run besides the spec (params) and lineage: the model
it used (deeprig.model.*), its input as an MLflow dataset, its rows and speed, the scores
when the input had labels, the rows it skipped, and its output (an artifact under a size
limit; its path and sha256 tagged either way)."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any

from deeprig.tracking.runs import RunRecorder
from deeprig.tracking.tags import Tag

LOG_OUTPUT_MAX_BYTES = 100 * 2**20  # larger outputs are tagged, never copied into the store


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(2**20):
            digest.update(chunk)
    return digest.hexdigest()


def input_digest(files: list[str]) -> str:
    """What tells two inputs apart without reading them: each file's path, size and time
    of change (MLflow's dataset digests are 8 characters too)."""
    digest = hashlib.sha256()
    for name in sorted(files):
        try:
            stat = os.stat(name)
            digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:  # a URI pyarrow reads: its name stands for it
            digest.update(f"{name}\n".encode())
    return digest.hexdigest()[:8]


def log_input(
    recorder: RunRecorder, source: str, digest: str, columns: dict[str, str], rows: int
) -> None:
    """The scored table as an MLflow dataset (context `prediction`): its source, digest,
    rows and the columns read (name -> Arrow type)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.types.schema import AnyType, ColSpec, DataType, Schema

    def kind(arrow_type: str) -> Any:
        for prefix, name in (("int", "long"), ("uint", "long"), ("double", "double")):
            if arrow_type.startswith(prefix):
                return DataType[name]
        known = {"float": "float", "bool": "boolean", "string": "string"}
        return DataType[known[arrow_type]] if arrow_type in known else AnyType()

    with warnings.catch_warnings():  # "can be interpreted in multiple ways"
        warnings.simplefilter("ignore")
        dataset_source = resolve_dataset_source(source)
    schema = Schema([ColSpec(kind(t), name) for name, t in columns.items()])
    dataset = MetaDataset(  # type: ignore[abstract]
        source=dataset_source, name=Path(source).name or source, digest=digest, schema=schema
    )
    tags = [
        InputTag("mlflow.data.context", "prediction"),
        InputTag("deeprig.num_rows", str(rows)),
    ]
    recorder.client.log_inputs(
        recorder.run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags)]
    )


def record_output(recorder: RunRecorder, path: str, log_it: bool) -> bool:
    """The output's path and sha256 tagged; the file logged under `output/` when asked
    and under LOG_OUTPUT_MAX_BYTES. Whether it was logged."""
    recorder.set_tags(
        {Tag.OUTPUT_PATH: str(Path(path).resolve()), Tag.OUTPUT_SHA256: file_sha256(path)}
    )
    if not log_it or os.path.getsize(path) > LOG_OUTPUT_MAX_BYTES:
        return False
    recorder.client.log_artifact(recorder.run_id, path, "output")
    return True


def record_scores(
    recorder: RunRecorder,
    scores: dict[str, float],
    confusion: list[list[int]] | None,
    classes: list[str],
) -> None:
    """A labelled input's scores (accuracy, f1_macro, auc / rmse, mae) and its confusion
    matrix plot."""
    recorder.log_metrics(scores)
    if confusion is not None:
        from deeprig.plots import confusion_matrix

        figure = confusion_matrix(confusion, classes, "Confusion matrix (predict)")
        recorder.log_figure(figure, "plots/confusion_matrix.png")


def record_skipped(recorder: RunRecorder, rows: list[tuple[str, str]]) -> None:
    """The rows left out as unreadable (`skip_bad_rows`): `skipped_rows.csv`, each row's
    name (its file) and why."""
    import pandas as pd

    recorder.log_csv(pd.DataFrame(rows, columns=["row", "error"]), "skipped_rows.csv")
