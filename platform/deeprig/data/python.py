"""`data.source: python`: the user's data function, called once on the driver, its return
value checked and turned into the same `x`/`y` Ray Datasets every source ends as.

Accepted returns: `(features, labels)` arrays (numpy, or anything `np.asarray` takes, such
as torch tensors), features in each sample's natural shape; a pandas DataFrame or pyarrow
Table with `data.features` / `data.label` columns (scalar feature columns standardised,
as Parquet's are); a `ray.data.Dataset` (streamed, never
pulled to the driver; columns `x`/`y` unless named); a `torch.utils.data.Dataset` of
`(x, y)` pairs (read once into arrays).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from deeprig.data.info import DataInfo, DataProblem, Task, num_val_rows
from deeprig.data.pipeline import BuildOptions, PreparedData, from_arrays, split_arrays
from deeprig.data.standardize import fit_arrays, standardized_arrays
from deeprig.spec.data import PythonData


@dataclass(frozen=True)
class LoadedData:
    """What the data function gave, in one of two forms."""

    x: np.ndarray | None  # in memory: every sample, natural shape
    y: np.ndarray | None
    dataset: Any = None  # streamed: a ray.data.Dataset with columns x and y
    # x is a table's scalar columns, one value each: standardised as Parquet's are.
    scalar_columns: bool = False


# The data function runs once per driver process and spec (validate, then run, reuse it).
_LOADED: dict[str, LoadedData] = {}


def load_python_data(spec: PythonData) -> LoadedData:
    from deeprig.usercode import UserCodeProblem, resolve_target
    from deeprig.usercode.signature import bind_arguments

    key = json.dumps(spec.model_dump(mode="json"), sort_keys=True)
    if key in _LOADED:
        return _LOADED[key]
    try:
        function = resolve_target(spec.target, "data.target")
    except UserCodeProblem as exc:
        raise DataProblem(exc.path, str(exc)) from None
    if not callable(function):
        raise DataProblem("data.target", f"{spec.target} is not a function")
    kwargs, problems = bind_arguments(function, spec.args, "data.args", {})
    if problems:
        raise DataProblem(problems[0].path, problems[0].message)
    try:
        returned = function(**kwargs)
    except Exception as exc:
        raise DataProblem(
            "data.target", f"{spec.target} raised {type(exc).__name__}: {exc}"
        ) from None
    loaded = _normalise(returned, spec)
    _LOADED[key] = loaded
    return loaded


def _normalise(returned: Any, spec: PythonData) -> LoadedData:
    for form in RETURN_FORMS:
        if form.matches(returned):
            return form.read(returned, spec)
    accepted = ", ".join(form.named for form in RETURN_FORMS[:-1])
    expected = f"{accepted}, or {RETURN_FORMS[-1].named}"
    raise DataProblem("data.target", f"returned a {type(returned).__name__}; expected {expected}")


def _is_pair(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2


def _from_pair(returned: tuple[Any, Any], spec: PythonData) -> LoadedData:
    try:
        x = np.asarray(returned[0], dtype=np.float32)
        y = np.asarray(returned[1])
    except (TypeError, ValueError) as exc:
        raise DataProblem("data.target", f"its (features, labels) are not arrays: {exc}") from None
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
        raise DataProblem(
            "data.target",
            f"features must be (N, ...) and labels (N,); got {x.shape} and {y.shape}",
        )
    return LoadedData(x, y)


def _is_table(value: Any) -> bool:
    import pandas as pd
    import pyarrow as pa

    return isinstance(value, pd.DataFrame | pa.Table)


def _from_table(table: Any, spec: PythonData) -> LoadedData:
    import pandas as pd
    import pyarrow as pa

    from deeprig.data.arrow import column_array

    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)

    if not spec.features or not spec.label:
        raise DataProblem(
            "data.features", "a DataFrame or Table needs data.features and data.label"
        )
    missing = [c for c in [*spec.features, spec.label] if c not in table.column_names]
    if missing:
        field = "data.label" if missing == [spec.label] else "data.features"
        raise DataProblem(
            field, f"column(s) {missing} not in the data (columns: {', '.join(table.column_names)})"
        )
    columns = [column_array(table.column(c)) for c in spec.features]
    x = np.stack(columns, axis=1)
    if len(spec.features) == 1:
        x = x[:, 0]
        x = x[:, None] if x.ndim == 1 else x
    y = table.column(spec.label).to_numpy(zero_copy_only=False)
    scalar = all(c.ndim == 1 for c in columns)
    return LoadedData(x.astype(np.float32), y, scalar_columns=scalar)


def _from_ray_dataset(dataset: Any, spec: PythonData) -> LoadedData:
    features = spec.features or ["x"]
    label = spec.label or "y"
    names = dataset.schema().names
    missing = [c for c in [*features, label] if c not in names]
    if missing:
        raise DataProblem(
            "data.features" if label not in missing else "data.label",
            f"column(s) {missing} not in the Ray Dataset (columns: {', '.join(names)}); name "
            "them with data.features / data.label",
        )
    if len(features) != 1:
        raise DataProblem(
            "data.features", "a Ray Dataset needs one feature column (a tensor per row)"
        )
    (feature,) = features
    if (feature, label) != ("x", "y"):
        dataset = dataset.rename_columns({feature: "x", label: "y"})
    return LoadedData(None, None, dataset.select_columns(["x", "y"]))


def _is_ray_dataset(value: Any) -> bool:
    try:
        from ray.data import Dataset
    except ImportError:
        return False
    return isinstance(value, Dataset)


def _is_torch_dataset(value: Any) -> bool:
    from torch.utils.data import Dataset

    return isinstance(value, Dataset) and hasattr(value, "__len__")


def _from_torch_dataset(dataset: Any, spec: PythonData) -> LoadedData:
    pairs = [dataset[i] for i in range(len(dataset))]
    x = np.stack([np.asarray(p[0], dtype=np.float32) for p in pairs])
    y = np.asarray([np.asarray(p[1]).item() for p in pairs])
    return LoadedData(x, y)


@dataclass(frozen=True)
class ReturnForm:
    """One thing a data function may return: how the error for a wrong return names it,
    whether a value is one, and how it is read."""

    named: str
    matches: Callable[[Any], bool]
    read: Callable[[Any, PythonData], LoadedData]


# What a data function may return, tried in order: the first form that matches reads it.
RETURN_FORMS = (
    ReturnForm("(features, labels) arrays", _is_pair, _from_pair),
    ReturnForm(
        "a pandas DataFrame or pyarrow Table (with data.features and data.label)",
        _is_table,
        _from_table,
    ),
    ReturnForm("a ray.data.Dataset", _is_ray_dataset, _from_ray_dataset),
    ReturnForm("a torch Dataset of (x, y) pairs", _is_torch_dataset, _from_torch_dataset),
)


def describe_python(spec: PythonData) -> DataInfo:
    loaded = load_python_data(spec)
    if loaded.dataset is None:
        assert loaded.x is not None and loaded.y is not None
        x, y = loaded.x, loaded.y
        task, num_outputs = infer_task(y, spec.task, "data.target")
        num_rows = len(y)
        if num_rows < 2:
            raise DataProblem("data.target", f"need at least 2 rows, got {num_rows}")
        return DataInfo(
            tuple(x.shape[1:]),
            task,
            num_outputs,
            num_rows,
            num_val_rows(num_rows, spec.val_fraction),
        )
    dataset = loaded.dataset
    first = dataset.take(1)
    if not first:
        raise DataProblem("data.target", "the Ray Dataset it returned is empty")
    shape = tuple(np.asarray(first[0]["x"]).shape)
    if not shape:
        shape = (1,)
    num_rows = dataset.count()
    labels = np.asarray([dataset.min("y"), dataset.max("y"), first[0]["y"]])
    task, num_outputs = infer_task(labels, spec.task, "data.target")
    return DataInfo(shape, task, num_outputs, num_rows, num_val_rows(num_rows, spec.val_fraction))


def infer_task(labels: np.ndarray, requested: str, field: str) -> tuple[Task, int]:
    """(task, outputs) from the labels: integer ids 0..K-1 are classes, floats a target."""
    is_int = np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_
    if not is_int and not np.issubdtype(labels.dtype, np.floating):
        raise DataProblem(
            field,
            f"labels of dtype {labels.dtype} are neither class ids nor numbers; encode the "
            "classes as integers 0..K-1",
        )
    inferred: Task = "classification" if is_int else "regression"
    task: Task = inferred if requested == "auto" else requested  # type: ignore[assignment]
    if task == "regression":
        return task, 1
    if not is_int:
        raise DataProblem(field, "classification needs integer class ids; these labels are floats")
    if labels.min() < 0:
        raise DataProblem(field, "class ids must be 0..K-1 (found a negative id)")
    return task, int(labels.max()) + 1


def python_datasets(spec: PythonData, info: DataInfo, how: BuildOptions) -> PreparedData:
    """The data function's arrays split as built-in data is (a table's scalar columns
    standardised on the training split as Parquet's are, unless data.standardize is
    false), or its Ray Dataset split as Parquet is (streamed, never pulled to the
    driver)."""
    loaded = load_python_data(spec)
    if loaded.dataset is not None:
        train, val = loaded.dataset.train_test_split(
            test_size=info.num_val, shuffle=True, seed=how.seed
        )
        return PreparedData(train, val)
    assert loaded.x is not None and loaded.y is not None
    y = loaded.y.astype(np.int64 if info.task == "classification" else np.float32)
    prepared = split_arrays(loaded.x, y, spec.val_fraction, how)
    if not (spec.standardize and loaded.scalar_columns) or prepared.arrays is None:
        return prepared
    (x, y), (val_x, val_y) = prepared.arrays["train"], prepared.arrays["val"]
    fitted = fit_arrays(x)
    train = (standardized_arrays(x, fitted), y)
    return from_arrays(how.num_workers, train, (standardized_arrays(val_x, fitted), val_y), fitted)


def first_samples(spec: PythonData, count: int) -> np.ndarray:
    """A few real samples, for the model's dry run."""
    loaded = load_python_data(spec)
    if loaded.dataset is None:
        assert loaded.x is not None
        return loaded.x[:count]
    rows = loaded.dataset.take(count)
    return np.stack([np.asarray(r["x"], dtype=np.float32) for r in rows])
