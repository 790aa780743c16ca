"""A data function: returns (features, labels) as numpy arrays, features in each sample's
natural shape. Here scikit-learn's 8x8 digits (shipped with scikit-learn, nothing is
downloaded), as one grey channel: (N, 1, 8, 8)."""

from __future__ import annotations

import numpy as np


def load(limit: int | None = None, noise: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    if noise:
        images = images + np.random.default_rng(0).normal(0, noise, images.shape).astype(np.float32)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels
