"""Ray Datasets for a data spec, on the driver. Workers get their shard from Ray Train."""

from __future__ import annotations

import math

import numpy as np

from deeprig.data.builtin import builtin_arrays, split_indices
from deeprig.data.describe import DataInfo
from deeprig.spec.models import DigitsData, ParquetData, SyntheticData

# Blocks of about this size let Ray Data split a data set evenly across workers and
# stream it without holding it whole in one task.
_TARGET_BLOCK_BYTES = 32 * 1024 * 1024


def build_datasets(
    spec: DigitsData | SyntheticData | ParquetData,
    info: DataInfo,
    seed: int,
    num_workers: int,
    data_cpus: float,
):
    """Return (train, validation) Ray Datasets with columns `x` and `y`.

    `data_cpus` is what each Ray Data task asks for; the runner sizes it to fit beside the
    training workers so reads can always be scheduled.
    """
    if isinstance(spec, ParquetData):
        return _parquet_datasets(spec, info, seed, data_cpus)
    x, y = builtin_arrays(spec, seed)
    train_idx, val_idx = split_indices(len(y), spec.val_fraction, seed)
    return (
        _from_numpy(x[train_idx], y[train_idx], num_workers),
        _from_numpy(x[val_idx], y[val_idx], num_workers),
    )


def _from_numpy(x: np.ndarray, y: np.ndarray, num_workers: int):
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

    def to_xy(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        first = batch[features[0]]
        if len(features) == 1 and (first.ndim > 1 or first.dtype == object):  # a list column
            x = np.stack([np.asarray(v, dtype=np.float32) for v in batch[features[0]]])
        else:
            x = np.stack([batch[c].astype(np.float32) for c in features], axis=1)
        return {"x": x.reshape(len(x), *shape), "y": batch[label].astype(label_dtype)}

    ds = ray.data.read_parquet(
        spec.path, columns=[*features, label], ray_remote_args={"num_cpus": data_cpus}
    ).map_batches(to_xy, batch_format="numpy", num_cpus=data_cpus)
    train, val = ds.train_test_split(test_size=info.num_val, shuffle=True, seed=seed)
    return train, val
