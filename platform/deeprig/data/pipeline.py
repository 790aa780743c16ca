"""Ray Datasets for a data spec, on the driver. Workers get their shard from Ray Train."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from deeprig.data.arrow import column_array
from deeprig.data.builtin import builtin_arrays, split_indices
from deeprig.data.describe import DataInfo
from deeprig.data.info import Fitted
from deeprig.data.python import load_python_data
from deeprig.data.standardize import fit_statistics, standardized
from deeprig.spec.data import (
    DataSpec,
    ImagesData,
    ParquetData,
    PythonData,
    TextData,
    TimeseriesData,
)

# Blocks of about this size let Ray Data split a data set evenly across workers and
# stream it without holding it whole in one task.
_TARGET_BLOCK_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class PreparedData:
    """A job's splits and what was fitted on its training split.

    Data born as arrays (built-in sets, a data function's arrays, text, time series) is
    kept as `arrays`: a worker that holds its shard in memory gets them through Ray's
    object store, without a Ray Data pipeline (whose start costs a small job ~5 s of its
    start-up). Its Ray Datasets are built only when something streams them.
    """

    train: Any = None  # Ray Datasets with columns `x`, `y` (None: build from `arrays`)
    val: Any = None
    test: Any | None = None  # a held-out test set the best model is scored on
    fitted: Fitted = Fitted()
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] | None = None  # split -> (x, y)
    num_workers: int = 1

    def for_trainer(self) -> dict[str, Any]:
        """The splits as Ray Datasets (built from the arrays when there are arrays)."""
        if self.arrays is not None and self.train is None:
            return {
                name: datasets_from_numpy(x, y, self.num_workers)
                for name, (x, y) in self.arrays.items()
            }
        return {"train": self.train, "val": self.val}


def _from_arrays(
    train: tuple, val: tuple, num_workers: int, fitted: Fitted = Fitted(), test: Any = None
):
    return PreparedData(
        test=test, fitted=fitted, arrays={"train": train, "val": val}, num_workers=num_workers
    )


def build_datasets(
    spec: DataSpec,
    info: DataInfo,
    seed: int,
    num_workers: int,
    data_cpus: float,
    in_memory: bool = False,
) -> PreparedData:
    """The splits of a data spec, preprocessing fitted on the training split.

    `data_cpus` is what each Ray Data task asks for; the runner sizes it to fit beside the
    training workers so reads can always be scheduled. `in_memory`: the workers hold their
    shards in memory (an image folder is then decoded once into arrays).
    """
    if isinstance(spec, ParquetData):
        return _parquet_datasets(spec, info, seed, data_cpus)
    if isinstance(spec, PythonData):
        return _python_datasets(spec, info, seed, num_workers)
    if isinstance(spec, ImagesData):
        from deeprig.data.images import image_arrays, image_datasets

        if in_memory and spec.image_column is None:
            train, val, test, fitted = image_arrays(spec, info, seed, data_cpus)
            return _from_arrays(train, val, num_workers, fitted, test)
        return PreparedData(*image_datasets(spec, info, seed, data_cpus))
    if isinstance(spec, TextData | TimeseriesData):
        if isinstance(spec, TextData):
            from deeprig.data.text import text_arrays

            (x, y), (vx, vy), fitted = text_arrays(spec, info, seed)
        else:
            from deeprig.data.timeseries import series_arrays

            (x, y), (vx, vy), fitted = series_arrays(spec, info)
        return _from_arrays((x, y), (vx, vy), num_workers, fitted)
    assert not isinstance(spec, ImagesData | TextData | TimeseriesData)
    x, y = builtin_arrays(spec, seed)
    train_idx, val_idx = split_indices(len(y), spec.val_fraction, seed)
    return _from_arrays((x[train_idx], y[train_idx]), (x[val_idx], y[val_idx]), num_workers)


def datasets_from_numpy(x: np.ndarray, y: np.ndarray, num_workers: int):
    import pyarrow as pa
    import ray.data
    from ray.data.extensions import ArrowTensorArray

    num_blocks = max(num_workers, math.ceil(x.nbytes / _TARGET_BLOCK_BYTES))
    tables = []
    for part in np.array_split(np.arange(len(y)), num_blocks):
        tables.append(pa.table({"x": ArrowTensorArray.from_numpy(x[part]), "y": pa.array(y[part])}))
    return ray.data.from_arrow(tables)


def _parquet_datasets(spec: ParquetData, info: DataInfo, seed: int, data_cpus: float):
    import ray.data

    features, label, shape = list(spec.features), spec.label, info.input_shape
    label_dtype = np.int64 if info.task == "classification" else np.float32
    class_ids = {n: i for i, n in enumerate(info.classes)} if info.classes else None

    def to_xy(batch) -> dict[str, np.ndarray]:
        # Arrow in, numpy out, whole columns at a time: a list column is flattened by Arrow
        # instead of converting each row's list in Python.
        x = np.stack([column_array(batch.column(c)) for c in features], axis=1)
        column = batch.column(label)
        if class_ids is not None:  # class names -> ids, in the order describe sorted them
            y = np.array([class_ids[v] for v in column.to_pylist()], dtype=np.int64)
        else:
            y = column.to_numpy().astype(label_dtype)
        return {"x": x.reshape(batch.num_rows, *shape), "y": y}

    ds = ray.data.read_parquet(
        spec.path, columns=[*features, label], num_cpus=data_cpus
    ).map_batches(to_xy, batch_format="pyarrow", num_cpus=data_cpus)
    train, val = ds.train_test_split(test_size=info.num_val, shuffle=True, seed=seed)
    # Scalar columns are standardised (one statistic per column); a list column is taken
    # as it is (pixels, a signal), like any data a user already scaled.
    if spec.standardize and math.prod(shape) == len(features):
        fitted = fit_statistics(train, shape)
        return PreparedData(standardized(train, fitted), standardized(val, fitted), fitted=fitted)
    return PreparedData(train, val)


def _python_datasets(spec: PythonData, info: DataInfo, seed: int, num_workers: int):
    """The data function's arrays split as built-in data is, or its Ray Dataset split as
    Parquet is (streamed, never pulled to the driver)."""
    loaded = load_python_data(spec)
    if loaded.dataset is not None:
        train, val = loaded.dataset.train_test_split(
            test_size=info.num_val, shuffle=True, seed=seed
        )
        return PreparedData(train, val)
    assert loaded.x is not None and loaded.y is not None
    y = loaded.y.astype(np.int64 if info.task == "classification" else np.float32)
    train_idx, val_idx = split_indices(len(y), spec.val_fraction, seed)
    x = loaded.x
    return _from_arrays((x[train_idx], y[train_idx]), (x[val_idx], y[val_idx]), num_workers)
