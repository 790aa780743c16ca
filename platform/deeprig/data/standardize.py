"""Mean/std statistics fitted on the training split (a Ray Dataset, arrays in memory, or
image bytes summed by the tasks that decode them) and applied to every split: the
per-channel normalisation of images and the per-column standardisation of tabular
features. `Fitted.stats_shape` says how the statistics broadcast over one sample."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from deeprig.data.info import Fitted

if TYPE_CHECKING:
    from torch import nn


def fit_statistics(
    train, stats_shape: tuple[int, ...], averaged_axes: tuple[int, ...] = ()
) -> Fitted:
    """Mean and std of `x` over every training row, one value per element of
    `stats_shape`; `averaged_axes` (a sample's axes, from 0) are averaged over too, e.g.
    height and width for per-channel image statistics."""

    def sums(batch) -> dict[str, np.ndarray]:
        return _sums(batch["x"], averaged_axes)

    parts = train.map_batches(sums, batch_format="numpy", batch_size=_ROWS).take_all()
    return fitted_from_sums(parts, stats_shape)


def fit_arrays(x: np.ndarray) -> Fitted:
    """Mean and std of every element of a sample over the training rows `x` held in
    memory (a table's scalar columns: one statistic per column)."""
    chunks = (_sums(x[i : i + _ROWS], ()) for i in range(0, len(x), _ROWS))
    # one part per chunk, shaped as one row of fit_statistics' Ray Dataset of sums
    parts = [{key: value[0] for key, value in chunk.items()} for chunk in chunks]
    return fitted_from_sums(parts, tuple(x.shape[1:]))


def standardized_arrays(x: np.ndarray, fitted: Fitted) -> np.ndarray:
    """`x` -> (x - mean) / std, as float32."""
    mean, std = fitted.broadcast_stats()
    return ((x - mean) / std).astype(np.float32)


def pixel_sums(pixels: np.ndarray, averaged_axes: tuple[int, ...]) -> dict[str, np.ndarray]:
    """The sums fit_statistics adds up, of image bytes read as floats in [0, 1], without
    making those floats (a decoding task sends its training rows' sums with its bytes)."""
    parts = [_sums(pixels[i : i + _ROWS], averaged_axes) for i in range(0, len(pixels), _ROWS)]
    return {
        "sum": np.sum([p["sum"] for p in parts], axis=0)[0] / 255.0,
        "sq": np.sum([p["sq"] for p in parts], axis=0)[0] / 255.0**2,
        "n": np.sum([p["n"] for p in parts]),
        "rows": np.sum([p["rows"] for p in parts]),
    }


def pixel_floats(pixels: np.ndarray, fitted: Fitted | None) -> np.ndarray:
    """(rows, C, H, W) image bytes -> float32 in [0, 1], standardised by `fitted` when
    given (its statistics are of [0, 1] values): one multiply-add per value, into one
    new array, where `(x / 255 - mean) / std` makes three."""
    channels = pixels.shape[1]
    scale = np.full((1, channels, 1, 1), 1 / 255.0, dtype=np.float32)
    shift = np.zeros_like(scale)
    if fitted is not None:
        mean, std = fitted.broadcast_stats()
        scale, shift = scale / std, -mean / std
    floats = np.multiply(pixels, scale, dtype=np.float32)
    floats += shift
    return floats


_ROWS = 4096  # rows summed at a time (in float64: a whole split at once could be GiBs)


def _sums(x: np.ndarray, averaged_axes: tuple[int, ...]) -> dict[str, np.ndarray]:
    x = x.astype(np.float64)
    axes = (0, *(a + 1 for a in averaged_axes))
    per_value = int(np.prod([x.shape[a] for a in axes]))
    return {
        "sum": x.sum(axis=axes).reshape(1, -1),
        "sq": (x * x).sum(axis=axes).reshape(1, -1),
        "n": np.array([per_value]),
        "rows": np.array([len(x)]),
    }


def fitted_from_sums(parts: list[dict[str, np.ndarray]], stats_shape: tuple[int, ...]) -> Fitted:
    """The statistics of every part's rows together (parts as _sums or pixel_sums give)."""
    count = float(sum(p["n"] for p in parts))
    mean = np.sum([p["sum"] for p in parts], axis=0) / count
    squares = np.sum([p["sq"] for p in parts], axis=0) / count
    std = np.sqrt(np.maximum(squares - mean**2, 0.0))
    std = np.where(std < 1e-8, 1.0, std)  # a constant feature is centred, not blown up
    return Fitted(
        input_mean=tuple(float(v) for v in mean),
        input_std=tuple(float(v) for v in std),
        stats_shape=stats_shape,
        fitted_on_rows=int(sum(p["rows"] for p in parts)),
    )


def standardized(dataset, fitted: Fitted):
    """`dataset` with x -> (x - mean) / std, broadcast as `fitted.stats_shape` says."""
    mean, std = fitted.broadcast_stats()

    def apply(batch) -> dict[str, np.ndarray]:
        return {"x": (batch["x"] - mean) / std, "y": batch["y"]}

    return dataset.map_batches(apply, batch_format="numpy")


def standardized_model(net: nn.Module, fitted: Fitted) -> tuple[nn.Module, bool, list[str]]:
    """The network behind the statistics fitted on its training split, when there are any
    (data.standardize, data.normalize)."""
    if fitted.input_mean is None:
        return net, True, []
    import torch

    from deeprig.models.wrappers import Standardized

    mean, std = (torch.from_numpy(a) for a in fitted.broadcast_stats())
    return Standardized(net, mean, std), True, []
