"""Arrow columns as numpy, whole columns at a time; the classes of a label column."""

from __future__ import annotations

import numpy as np

from deeprig.data.info import DataProblem


def column_array(column) -> np.ndarray:
    """One Parquet column as float32: (rows,) for a scalar column, (rows, n) for a column of
    fixed-size lists."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    kind = column.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        flat = pc.list_flatten(column).to_numpy(zero_copy_only=False)
        return flat.astype(np.float32).reshape(len(column), -1)
    if isinstance(kind, pa.ExtensionType):  # Ray's tensor columns
        return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(
            len(column), -1
        )
    return column.to_numpy(zero_copy_only=False).astype(np.float32)


def label_classes(labels, field: str) -> tuple[str, ...]:
    """The classes of a label column: its distinct names sorted, or ids 0..K-1."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = labels.type
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        low, high = pc.min(labels).as_py(), pc.max(labels).as_py()
        if low is None or int(low) < 0:
            raise DataProblem(field, "class ids must be 0..K-1 (found a negative or no id)")
        return tuple(str(i) for i in range(int(high) + 1))
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataProblem(field, f"labels must be class names or ids, the column is {kind}")
    names = sorted(str(v) for v in pc.unique(labels.drop_null()).to_pylist())
    if len(names) < 2:
        raise DataProblem(field, f"only one class ({names}): classification needs at least two")
    return tuple(names)
