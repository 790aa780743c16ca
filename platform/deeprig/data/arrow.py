"""Arrow columns as numpy, whole columns at a time."""

from __future__ import annotations

import numpy as np


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
