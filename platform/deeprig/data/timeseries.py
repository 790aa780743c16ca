"""Time series: rows of a CSV or Parquet file in time order, cut into sliding windows of
`window` past steps of every input column, each labelled with the target at every step
1..`horizon` after the window's last one (the direct multi-output forecast: one network
output per step).

The split is chronological: the last `val_fraction` of windows validate, and no training
window's target lies in the validation part (the horizon - 1 windows between the two,
whose later steps would, are left out). Scaling is fitted on the training windows
only, each forecast step its own. By default (`forecast: change`) each window is read
relative to its last row and the model forecasts each step's change from it, so a
trending series never leaves the range it trained on. The persistence forecast (the
target's last observed value, at every step) is scored on the same validation windows,
in the series' own units, so every run shows whether its model beats the obvious
baseline: at step `horizon`, and as the mean over the steps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from deeprig.data.info import DataInfo, DataProblem, Fitted, num_val_rows
from deeprig.data.parquet import read_table
from deeprig.regression import regression_errors
from deeprig.spec.data import TimeseriesData

if TYPE_CHECKING:
    from torch import nn


def describe_series(spec: TimeseriesData) -> DataInfo:
    values = _series(spec)
    num_windows = len(values) - spec.window - spec.horizon + 1
    if num_windows < 2:
        raise DataProblem(
            "data.window",
            f"{len(values)} rows give {max(num_windows, 0)} windows of window {spec.window} + "
            f"horizon {spec.horizon}; at least 2 are needed: shorten the window",
        )
    num_val = num_val_rows(num_windows, spec.val_fraction)
    num_train = num_windows - num_val - _purged(spec)
    if num_train < 1:
        raise DataProblem(
            "data.val_fraction",
            "leaves no training window"
            + (
                f" (the {_purged(spec)} before the validation part are left out: their later "
                "steps are its targets)"
                if _purged(spec)
                else ""
            ),
        )
    return DataInfo(
        (spec.window, len(spec.columns)), "regression", spec.horizon, num_train + num_val, num_val
    )


def _purged(spec: TimeseriesData) -> int:
    """Windows left out between the training and validation parts: the last horizon - 1
    training windows' later steps are the first validation windows' targets."""
    return spec.horizon - 1


def _series(spec: TimeseriesData) -> np.ndarray:
    """(rows, columns) float64: the input columns, the target last when it is not one."""
    import pyarrow as pa

    wanted = _columns(spec)
    table = read_table(spec.path, wanted)
    arrays = []
    for name in wanted:
        column = table.column(name)
        field = "data.target" if name == spec.target else "data.columns"
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
            raise DataProblem(field, f"column {name!r} holds {column.type}, not numbers")
        if column.null_count:
            raise DataProblem(
                field,
                f"column {name!r} has {column.null_count} missing values; fill them (e.g. "
                "interpolate) before training: windows must be evenly spaced",
            )
        arrays.append(column.to_numpy().astype(np.float64))
    return np.stack(arrays, axis=1)


def _columns(spec: TimeseriesData) -> list[str]:
    """The columns read, in order: the inputs, then the target unless it is one of them."""
    return list(dict.fromkeys([*spec.columns, spec.target]))


def series_arrays(spec: TimeseriesData, info: DataInfo):
    """((train x, y), (val x, y), Fitted): windows as float32 (rows, window, columns), each
    labelled with the target at steps 1..horizon after its last row (rows, horizon)."""
    values = _series(spec)
    wanted = _columns(spec)
    inputs = [wanted.index(c) for c in spec.columns]
    target_index = wanted.index(spec.target)
    target = values[:, target_index]
    num_train, num_val = info.num_train, info.num_val
    first_val = num_train + _purged(spec)
    starts = np.r_[np.arange(num_train), np.arange(first_val, first_val + num_val)]
    steps = starts[:, None] + np.arange(spec.window)[None, :]  # (windows, window) row ids
    last = starts + spec.window - 1  # each window's last row
    ahead = last[:, None] + np.arange(1, spec.horizon + 1)[None, :]  # (windows, horizon)
    x = values[steps][:, :, inputs]  # (windows, window, inputs)
    y = target[ahead]
    if spec.forecast == "change":  # relative to the window's last row
        x = x - values[last][:, None, inputs]
        y = y - target[last][:, None]
    # Scaling sees the training windows only: none of them reads or forecasts a row of the
    # validation part's targets. Each step has its own spread (a change 10 steps on
    # varies more than one a step on), so each is scaled by its own.
    x_mean, x_std = _statistics(x[:num_train].reshape(-1, len(inputs)), spec)
    y_mean, y_std = _statistics(y[:num_train], spec)
    x = ((x - x_mean) / x_std).astype(np.float32)
    y = ((y - y_mean) / y_std).astype(np.float32)
    fitted = Fitted(
        input_mean=tuple(float(v) for v in x_mean),
        input_std=tuple(float(v) for v in x_std),
        stats_shape=(1, len(inputs)),
        target_mean=tuple(float(v) for v in y_mean),
        target_std=tuple(float(v) for v in y_std),
        baseline=_persistence(target[ahead[num_train:]], target[last[num_train:]]),
        fitted_on_rows=num_train,
    )
    return (x[:num_train], y[:num_train]), (x[num_train:], y[num_train:]), fitted


def _persistence(truth: np.ndarray, last: np.ndarray) -> tuple[tuple[str, float], ...]:
    """The persistence forecast's validation errors (the target stays at its last observed
    value, at every step): at the last step, and (over several) the mean over the steps,
    named as the model's with a `_persistence` suffix."""
    error = truth - last[:, None]  # (windows, horizon)
    squared, absolute = (error**2).sum(axis=0), np.abs(error).sum(axis=0)
    errors = regression_errors(squared.tolist(), absolute.tolist(), len(error))
    return tuple((f"val_{name}_persistence", value) for name, value in errors.items())


def _statistics(rows: np.ndarray, spec: TimeseriesData) -> tuple[np.ndarray, np.ndarray]:
    """Per-column (mean, std) of training rows; changes keep mean 0 (no change is 0)."""
    if not spec.scale:
        return np.zeros(rows.shape[1]), np.ones(rows.shape[1])
    std = np.maximum(rows.std(axis=0), 1e-12)
    mean = rows.mean(axis=0) if spec.forecast == "level" else np.zeros(rows.shape[1])
    return mean, std


def series_model(
    net: nn.Module, fitted: Fitted, spec: TimeseriesData, classes: list[str]
) -> tuple[nn.Module, bool, list[str]]:
    """The forecaster behind the window's scaling: it reads raw windows and forecasts
    every step 1..horizon in the series' own units."""
    import torch

    from deeprig.models.wrappers import SeriesForecaster

    mean, std = (torch.from_numpy(a) for a in fitted.broadcast_stats())
    target_index = spec.columns.index(spec.target) if spec.target in spec.columns else 0
    forecaster = SeriesForecaster(
        net,
        mean,
        std,
        torch.tensor(fitted.target_mean or (0.0,)),
        torch.tensor(fitted.target_std or (1.0,)),
        spec.forecast == "change",
        target_index,
    )
    return forecaster, True, []
