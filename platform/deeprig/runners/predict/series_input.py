"""A series CSV/Parquet scored by a forecaster (`source: timeseries`): the model's input
columns read whole on the driver (a series is windowed across rows, as training read it),
then every window of `window` rows, one row each, named by `row`, the position of its last
row in the file (and any id columns' values there). Its forecast is the target at every
step 1..`horizon` after that row, as training forecast it: `prediction` for a horizon of
one, else one column per step, `prediction_1` ... `prediction_<horizon>`; scaling and
changes are inside the model. When the input holds the target, `actual` (`actual_1` ...)
is its value at each step (null past the file's end), and the run scores the windows
that have one as a train job scores validation: `rmse` and `mae` at step `horizon`, and
over several steps `rmse_all_steps` and `mae_all_steps`, the means over the steps."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deeprig.runners.predict.inputs import (
    PREDICTION,
    BadRows,
    PredictInput,
    block_rows,
    step_columns,
)
from deeprig.spec.errors import Problem, SpecError

if TYPE_CHECKING:
    import pandas as pd

    from deeprig.runners.predict.model import PredictModel
    from deeprig.spec.predict import PredictSpec

ROW = "row"  # the window's last row in the file, from 0
WINDOW = "window"  # the window's values, flattened (window x input columns)
ACTUAL = "actual"  # the target at each step forecast, when the input holds it


def check_series(spec: PredictSpec, model: PredictModel) -> PredictInput:
    import pyarrow as pa

    from deeprig.data.info import DataProblem
    from deeprig.data.parquet import open_table

    data = model.data
    try:
        dataset = open_table(spec.input, field="input")
    except DataProblem as exc:
        raise SpecError([Problem(exc.path, str(exc))]) from None
    schema = dataset.schema
    problems = []
    missing = [c for c in data.columns if c not in schema.names]
    if missing:
        problems.append(
            Problem("input", f"column(s) {missing} missing: the model reads {data.columns}")
        )
    wrong = [
        f"{c} ({schema.field(c).type})"
        for c in data.columns
        if c in schema.names
        and not (
            pa.types.is_integer(schema.field(c).type) or pa.types.is_floating(schema.field(c).type)
        )
    ]
    if wrong:
        problems.append(Problem("input", f"column(s) {', '.join(wrong)} hold no numbers"))
    absent_ids = [c for c in spec.id_columns if c not in schema.names]
    if absent_ids:
        problems.append(Problem("id_columns", f"column(s) {absent_ids} not in {spec.input!r}"))
    outputs = [*step_columns(ACTUAL, data.horizon), *step_columns(PREDICTION, data.horizon)]
    taken = [c for c in spec.id_columns if c in outputs]
    if taken:
        problems.append(
            Problem(
                "id_columns",
                f"{taken} name the output's own columns (the forecast and the target at each "
                f"of its {data.horizon} step(s)): pass columns of other names",
            )
        )
    if problems:
        raise SpecError(problems)
    windows = dataset.count_rows() - data.window + 1
    if windows < 1:
        raise SpecError(
            [Problem("input", f"{spec.input!r} holds fewer rows than one window ({data.window})")]
        )
    columns = {ROW: "int64", **{c: str(schema.field(c).type) for c in spec.id_columns}}
    label = ACTUAL if data.target in schema.names else None
    actual = step_columns(ACTUAL, data.horizon) if label else []
    return PredictInput(
        list(dataset.files),
        columns | {WINDOW: "list<float>"} | dict.fromkeys(actual, "double"),
        windows,
        label,
        [ROW, *spec.id_columns],
        steps=data.horizon,
    )


def series_windows(spec: PredictSpec, data: Any, labelled: bool = False) -> Any:
    """Every window of the series as an Arrow table: its last row, the id columns' values
    there, its values flattened and, `labelled`, the target at each step forecast (null
    past the file's end)."""
    import numpy as np
    import pyarrow as pa

    from deeprig.data.parquet import read_table

    target = [data.target] if labelled else []
    names = list(dict.fromkeys([*data.columns, *spec.id_columns, *target]))
    table = read_table(spec.input, names, "input")
    values = np.stack([table.column(c).to_numpy().astype(np.float32) for c in data.columns], axis=1)
    ends = np.arange(data.window - 1, len(values))
    steps = ends[:, None] - np.arange(data.window)[::-1][None, :]  # (windows, window) rows
    flat = values[steps].reshape(len(ends), -1)
    columns = {ROW: pa.array(ends, pa.int64())}
    columns |= {c: table.column(c).take(pa.array(ends)) for c in spec.id_columns}
    columns[WINDOW] = pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1])
    if labelled:
        truth = table.column(data.target).to_numpy().astype(np.float64)
        for step, name in enumerate(step_columns(ACTUAL, data.horizon), start=1):
            ahead = ends + step
            known = ahead < len(truth)
            actual = np.where(known, truth[np.minimum(ahead, len(truth) - 1)], np.nan)
            columns[name] = pa.array(actual, pa.float64(), mask=~known)
    return pa.table(columns)


def series_rows(
    spec: PredictSpec, model: PredictModel, found: PredictInput, read_cpus: float
) -> Any:
    import pyarrow as pa
    import ray.data

    windows = series_windows(spec, model.data, labelled=found.label is not None)
    size = block_rows(windows.num_rows, spec.workers, spec.batch_size)
    # (tables, not record batches: Ray Data's batcher reads a block's columns as chunked)
    blocks = [pa.Table.from_batches([b]) for b in windows.to_batches(max_chunksize=size)]
    return ray.data.from_arrow(blocks)


def series_features(model: PredictModel, batch: pd.DataFrame) -> tuple[Any, BadRows]:
    import numpy as np

    windows = np.stack([np.asarray(w, dtype=np.float32) for w in batch[WINDOW]])
    return windows.reshape(len(windows), *model.input_shape), []
