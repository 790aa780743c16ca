"""The errors of a regression or a multi-step forecast from its sums, in one place: the
validation of a train job (training/evaluate.py), the persistence baseline of a series
(data/timeseries.py) and a predict job's scores name and average them alike. Plain
arithmetic, so any of them may import it."""

from __future__ import annotations

import math
from collections.abc import Sequence


def regression_errors(
    squared: Sequence[float],
    absolute: Sequence[float],
    rows: float | Sequence[float],
    target_std: Sequence[float] | None = None,
) -> dict[str, float]:
    """`rmse` and `mae` of the last output (a forecast's step `horizon`, the one it is
    named by), from each output's sums of squared and absolute errors over `rows` rows
    (one count, or one per output); with several outputs also `rmse_all_steps` and
    `mae_all_steps`, the mean over the outputs of each one's (scikit-learn's
    `uniform_average`). Scaled errors are scaled back by `target_std`; an output with no
    rows is left out."""
    counts = [rows] * len(squared) if isinstance(rows, int | float) else list(rows)
    std = list(target_std or [1.0] * len(squared))
    each = [
        (math.sqrt(q / n) * s, a / n * s)
        for q, a, n, s in zip(squared, absolute, counts, std, strict=True)
        if n
    ]
    metrics = {}
    if counts and counts[-1]:
        metrics = {"rmse": each[-1][0], "mae": each[-1][1]}
    if len(squared) > 1 and each:
        metrics["rmse_all_steps"] = sum(r for r, _ in each) / len(each)
        metrics["mae_all_steps"] = sum(m for _, m in each) / len(each)
    return metrics
