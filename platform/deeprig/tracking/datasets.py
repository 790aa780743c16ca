"""A run's training and validation data as MLflow datasets (`log_inputs`), so the run
page's "Datasets" shows them: name, digest, source and schema, in MLflow's own format."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass

from deeprig.tracking.runs import RunRecorder


@dataclass(frozen=True)
class DatasetRecord:
    name: str  # e.g. "digits-train"
    context: str  # MLflow's `mlflow.data.context`: training / validation
    source: str  # a path or URI, or a Python target (module:attr) for code-made data
    fingerprint: str  # what makes two splits equal: the data spec, the seed, the split
    sample_shape: tuple[int, ...]
    label_dtype: str  # int64 (classes) or float32 (a target)
    num_rows: int


def log_datasets(recorder: RunRecorder, records: list[DatasetRecord]) -> None:
    import numpy as np
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.types.schema import Schema, TensorSpec

    inputs = []
    for record in records:
        if "/" in record.source or "://" in record.source:
            with warnings.catch_warnings():  # "can be interpreted in multiple ways"
                warnings.simplefilter("ignore")
                source = resolve_dataset_source(record.source)
        else:
            source = CodeDatasetSource({"mlflow.source.name": record.source})
        schema = Schema(
            [
                TensorSpec(np.dtype("float32"), (-1, *record.sample_shape), "x"),
                TensorSpec(np.dtype(record.label_dtype), (-1,), "y"),
            ]
        )
        digest = hashlib.sha256(record.fingerprint.encode()).hexdigest()[:8]
        # (MLflow's own stand-in for data it does not hold; its stub marks it abstract.)
        dataset = MetaDataset(  # type: ignore[abstract]
            source=source, name=record.name, digest=digest, schema=schema
        )
        tags = [
            InputTag("mlflow.data.context", record.context),
            InputTag("deeprig.num_rows", str(record.num_rows)),
        ]
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags))
    recorder.log_inputs(inputs)  # (through its outbox: kept while the server is away)
