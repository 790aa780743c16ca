"""Built-in data sets, generated or shipped with a package: nothing is downloaded."""

from __future__ import annotations

import math

import numpy as np

from deeprig.data.info import DataInfo, Task, num_val_rows
from deeprig.spec.data import DigitsData, SyntheticData


def describe_digits(spec: DigitsData) -> DataInfo:
    return DataInfo((8, 8), "classification", 10, 1797, num_val_rows(1797, spec.val_fraction))


def describe_synthetic(spec: SyntheticData) -> DataInfo:
    task: Task = "classification" if spec.num_classes > 0 else "regression"
    return DataInfo(
        tuple(spec.shape),
        task,
        spec.num_classes if spec.num_classes > 0 else 1,
        spec.num_samples,
        num_val_rows(spec.num_samples, spec.val_fraction),
    )


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as float32 images in [0, 1] and int64 labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)  # (1797, 8, 8)
    return images, bunch.target.astype(np.int64)


def synthetic_arrays(spec: SyntheticData, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable data of any size: Gaussian clusters around one centre per class, or a noisy
    linear target when num_classes is 0. Deterministic for a seed. Centres sit ~3 noise
    standard deviations apart whatever the dimension, so the task is learnable but not
    trivial (a trivially separable task drives losses towards denormal floats, which
    makes CPU timings meaningless)."""
    rng = np.random.default_rng(seed)
    dim = math.prod(spec.shape)
    n = spec.num_samples
    if spec.num_classes > 0:
        spread = 2.0 / math.sqrt(dim)
        centres = rng.normal(0.0, spread, size=(spec.num_classes, dim)).astype(np.float32)
        labels = rng.integers(0, spec.num_classes, size=n)
        x = centres[labels] + rng.normal(0.0, 1.0, size=(n, dim)).astype(np.float32)
        y = labels.astype(np.int64)
    else:
        weights = rng.normal(0.0, 1.0, size=dim).astype(np.float32) / math.sqrt(dim)
        x = rng.normal(0.0, 1.0, size=(n, dim)).astype(np.float32)
        y = (x @ weights + 0.1 * rng.normal(size=n)).astype(np.float32)
    return x.reshape(n, *spec.shape), y


def builtin_arrays(spec: DigitsData | SyntheticData, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(spec, DigitsData):
        return digits_arrays()
    return synthetic_arrays(spec, seed)


def split_indices(num_rows: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic shuffled split: the same seed gives the same validation rows."""
    order = np.random.default_rng(seed).permutation(num_rows)
    num_val = max(1, round(num_rows * val_fraction))
    return order[num_val:], order[:num_val]
