"""Tables of features and a label, Parquet or CSV, read by Ray Data: what the driver learns
of them (shape, task, classes, so bad data exits 2 before Ray starts), their splits, and a
few samples. `table_format`, `read_table` and `read_rows` are how every table reader tells,
reads and streams the two formats."""

from __future__ import annotations

import difflib
import math
import os

import numpy as np

from deeprig.data.arrow import column_array
from deeprig.data.info import DataInfo, DataProblem, Task, num_val_rows
from deeprig.data.pipeline import BuildOptions, PreparedData
from deeprig.data.standardize import fit_statistics, standardized
from deeprig.spec.data import ParquetData


def table_format(path: str) -> str:
    """CSV for .csv files (compressed too) and folders of only them; Parquet otherwise."""
    if os.path.isdir(path):
        names = [n for n in os.listdir(path) if not n.startswith((".", "_"))]
        return "csv" if names and all(".csv" in n.lower() for n in names) else "parquet"
    return "csv" if ".csv" in os.path.basename(path).lower() else "parquet"


def open_table(path: str, field: str = "data.path"):
    """The pyarrow dataset of a Parquet or CSV file, folder or URI, with at least one file."""
    import pyarrow as pa
    import pyarrow.dataset as pads

    kind = table_format(path)
    name = "CSV" if kind == "csv" else "Parquet"
    try:
        dataset = pads.dataset(path, format=kind)
    except FileNotFoundError:
        raise DataProblem(field, f"no {name} data at {path!r}") from None
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        raise DataProblem(field, f"cannot read {name} at {path!r}: {exc}") from None
    if not dataset.files:
        raise DataProblem(field, f"no {name} files under {path!r}")
    return dataset


def read_table(path: str, columns: list[str], field: str = "data.path"):
    """A CSV or Parquet file (or a folder of them) as one pyarrow Table of `columns`."""
    import pyarrow as pa
    import pyarrow.dataset as pads

    try:
        dataset = pads.dataset(path, format=table_format(path))
        if not dataset.files:
            raise FileNotFoundError(path)
    except FileNotFoundError:
        raise DataProblem(field, f"no CSV or Parquet data at {path!r}") from None
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        raise DataProblem(field, f"cannot read {path!r}: {exc}") from None
    names = dataset.schema.names
    missing = [c for c in columns if c not in names]
    if missing:
        raise DataProblem(
            field, f"column(s) {missing} not in {path!r} (columns: {', '.join(names[:12])})"
        )
    return dataset.to_table(columns=columns)


def read_rows(path: str, columns: list[str] | None, num_cpus: float | None = None):
    """A Ray Dataset streaming `columns` (None: all) of a Parquet or CSV table."""
    import ray.data

    if table_format(path) == "parquet":
        return ray.data.read_parquet(path, columns=columns, num_cpus=num_cpus)
    import pyarrow.csv as pacsv

    convert = pacsv.ConvertOptions(include_columns=columns) if columns else None
    return ray.data.read_csv(path, convert_options=convert, num_cpus=num_cpus)


def describe_parquet(spec: ParquetData) -> DataInfo:
    import pyarrow as pa
    import pyarrow.compute as pc

    dataset = open_table(spec.path)
    schema = dataset.schema

    missing = [c for c in [*spec.features, spec.label] if c not in schema.names]
    if missing:
        names = schema.names
        shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
        close = difflib.get_close_matches(missing[0], names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        field = "data.label" if missing == [spec.label] else "data.features"
        raise DataProblem(field, f"column(s) {missing} not in the data{hint} (columns: {shown})")

    input_shape = _feature_shape(spec, dataset, schema)
    label_type = schema.field(spec.label).type
    num_rows = dataset.count_rows()
    if num_rows < 2:
        raise DataProblem("data.path", f"need at least 2 rows, found {num_rows}")
    if pa.types.is_string(label_type) or pa.types.is_large_string(label_type):
        if spec.task == "regression":
            raise DataProblem("data.label", f"regression needs a numeric label, got {label_type}")
        from deeprig.data.arrow import label_classes

        names = label_classes(
            dataset.to_table(columns=[spec.label]).column(spec.label), "data.label"
        )
        return DataInfo(
            input_shape,
            "classification",
            len(names),
            num_rows,
            num_val_rows(num_rows, spec.val_fraction),
            classes=names,
        )
    is_int = pa.types.is_integer(label_type) or pa.types.is_boolean(label_type)
    inferred: Task = "classification" if is_int else "regression"
    task: Task = inferred if spec.task == "auto" else spec.task
    if task == "classification":
        if not is_int:
            raise DataProblem(
                "data.label",
                f"classification needs class ids or names, column {spec.label!r} is "
                f"{label_type}; encode the classes as 0..K-1 or set data.task: regression",
            )
        labels = dataset.to_table(columns=[spec.label]).column(spec.label)
        low, high = pc.min(labels).as_py(), pc.max(labels).as_py()
        if low is None or low < 0:
            raise DataProblem("data.label", "class ids must be 0..K-1 (found a negative id)")
        num_outputs = int(high) + 1
    elif not (pa.types.is_floating(label_type) or is_int):
        raise DataProblem("data.label", f"regression needs a numeric label, got {label_type}")
    else:
        num_outputs = 1
    return DataInfo(
        input_shape, task, num_outputs, num_rows, num_val_rows(num_rows, spec.val_fraction)
    )


def _feature_shape(spec: ParquetData, dataset, schema) -> tuple[int, ...]:
    import pyarrow as pa

    types = {name: schema.field(name).type for name in spec.features}
    scalar = [n for n, t in types.items() if pa.types.is_integer(t) or pa.types.is_floating(t)]
    if len(scalar) == len(spec.features):
        natural: tuple[int, ...] = (len(scalar),)
    elif len(spec.features) == 1:
        natural = _tensor_column_shape(spec.features[0], types[spec.features[0]], dataset)
    else:
        bad = [n for n in spec.features if n not in scalar]
        raise DataProblem(
            "data.features",
            f"columns {bad} are not numeric scalars; use several scalar columns or exactly one "
            "fixed-size list column",
        )
    if spec.feature_shape is None:
        return natural
    if math.prod(spec.feature_shape) != math.prod(natural):
        raise DataProblem(
            "data.feature_shape",
            f"{spec.feature_shape} holds {math.prod(spec.feature_shape)} values but each sample "
            f"has {math.prod(natural)}",
        )
    return tuple(spec.feature_shape)


def _tensor_column_shape(name: str, dtype, dataset) -> tuple[int, ...]:
    import pyarrow as pa

    if pa.types.is_fixed_size_list(dtype):
        shape = [dtype.list_size]
        inner = dtype.value_type
        while pa.types.is_fixed_size_list(inner):
            shape.append(inner.list_size)
            inner = inner.value_type
        return tuple(shape)
    if hasattr(dtype, "shape") and getattr(dtype, "shape", None):  # Ray's tensor extension
        return tuple(int(d) for d in dtype.shape)
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        first = dataset.head(1, columns=[name]).column(name)[0].as_py()
        return (len(first),)
    raise DataProblem(
        "data.features", f"column {name!r} has type {dtype}; expected numbers or a list of numbers"
    )


def parquet_datasets(spec: ParquetData, info: DataInfo, how: BuildOptions) -> PreparedData:
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

    ds = read_rows(spec.path, [*features, label], how.data_cpus).map_batches(
        to_xy, batch_format="pyarrow", num_cpus=how.data_cpus
    )
    train, val = ds.train_test_split(test_size=info.num_val, shuffle=True, seed=how.seed)
    # Scalar columns are standardised (one statistic per column); a list column is taken
    # as it is (pixels, a signal), like any data a user already scaled.
    if spec.standardize and math.prod(shape) == len(features):
        fitted = fit_statistics(train, shape)
        return PreparedData(standardized(train, fitted), standardized(val, fitted), fitted=fitted)
    return PreparedData(train, val)


def parquet_samples(spec: ParquetData, info: DataInfo, count: int) -> np.ndarray:
    table = open_table(spec.path).head(count, columns=spec.features)
    x = np.stack([column_array(table.column(c)) for c in spec.features], axis=1)
    return x.reshape(len(x), *info.input_shape).astype(np.float32)
