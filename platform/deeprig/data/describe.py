"""What the driver knows about the data before any worker starts: sample shape, task,
outputs, row counts. Checking it here is what lets a bad data spec fail with exit 2
before Ray starts (a missing path, a missing column, an unusable label)."""

from __future__ import annotations

import difflib
import math

from deeprig.data.info import DataInfo, DataProblem, Task, num_val_rows
from deeprig.spec.data import (
    DataSpec,
    DigitsData,
    ImagesData,
    ParquetData,
    PythonData,
    SyntheticData,
    TextData,
    TimeseriesData,
)

__all__ = ["DataInfo", "DataProblem", "Task", "describe_data"]


def describe_data(spec: DataSpec) -> DataInfo:
    if isinstance(spec, ImagesData):
        from deeprig.data.images import describe_images

        return describe_images(spec)
    if isinstance(spec, TextData):
        from deeprig.data.text import describe_text

        return describe_text(spec)
    if isinstance(spec, TimeseriesData):
        from deeprig.data.timeseries import describe_series

        return describe_series(spec)
    if isinstance(spec, PythonData):
        from deeprig.data.python import describe_python

        return describe_python(spec)
    if isinstance(spec, DigitsData):
        return DataInfo((8, 8), "classification", 10, 1797, num_val_rows(1797, spec.val_fraction))
    if isinstance(spec, SyntheticData):
        task: Task = "classification" if spec.num_classes > 0 else "regression"
        return DataInfo(
            tuple(spec.shape),
            task,
            spec.num_classes if spec.num_classes > 0 else 1,
            spec.num_samples,
            num_val_rows(spec.num_samples, spec.val_fraction),
        )
    return _describe_parquet(spec)


def _describe_parquet(spec: ParquetData) -> DataInfo:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    try:
        dataset = pads.dataset(spec.path, format="parquet")
    except FileNotFoundError:
        raise DataProblem("data.path", f"no Parquet data at {spec.path!r}") from None
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        raise DataProblem("data.path", f"cannot read Parquet at {spec.path!r}: {exc}") from None
    schema = dataset.schema
    if not dataset.files:
        raise DataProblem("data.path", f"no Parquet files under {spec.path!r}")

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
