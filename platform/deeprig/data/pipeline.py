"""What every source's build returns (`PreparedData`: a job's splits, as arrays or Ray
Datasets, and what was fitted on its training split) and the helpers the array sources
share. Which source builds how is `data/sources.py`'s table."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from deeprig.data.builtin import split_indices
from deeprig.data.info import Fitted

# Blocks of about this size let Ray Data split a data set evenly across workers and
# stream it without holding it whole in one task.
_TARGET_BLOCK_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class BuildOptions:
    """How the runner asks for the splits: `data_cpus` is what each Ray Data task asks
    for (sized to fit beside the training workers, so reads can always be scheduled);
    `in_memory`: the workers hold their shards in memory (an image folder is then decoded
    once into arrays)."""

    seed: int
    num_workers: int
    data_cpus: float
    in_memory: bool = False


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


def from_arrays(
    num_workers: int, train: tuple, val: tuple, fitted: Fitted = Fitted(), test: Any = None
) -> PreparedData:
    """Splits already made as (x, y) arrays."""
    return PreparedData(
        test=test, fitted=fitted, arrays={"train": train, "val": val}, num_workers=num_workers
    )


def split_arrays(
    x: np.ndarray, y: np.ndarray, val_fraction: float, how: BuildOptions
) -> PreparedData:
    """Whole arrays split by the seeded permutation every in-memory source uses."""
    train_idx, val_idx = split_indices(len(y), val_fraction, how.seed)
    return from_arrays(how.num_workers, (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx]))


def datasets_from_numpy(x: np.ndarray, y: np.ndarray, num_workers: int):
    import pyarrow as pa
    import ray.data
    from ray.data.extensions import ArrowTensorArray

    num_blocks = max(num_workers, math.ceil(x.nbytes / _TARGET_BLOCK_BYTES))
    tables = []
    for part in np.array_split(np.arange(len(y)), num_blocks):
        # (labels per position, a language model's: a tensor column like x)
        labels = ArrowTensorArray.from_numpy(y[part]) if y.ndim > 1 else pa.array(y[part])
        tables.append(pa.table({"x": ArrowTensorArray.from_numpy(x[part]), "y": labels}))
    return ray.data.from_arrow(tables)
