"""A few real samples of any data source, in the shape the model reads: what the dry run
of a user's model is fed before Ray starts."""

from __future__ import annotations

import numpy as np

from deeprig.data.info import DataInfo
from deeprig.spec.train import DigitsData, ParquetData, PythonData, SyntheticData


def first_samples(
    spec: DigitsData | SyntheticData | ParquetData | PythonData, info: DataInfo, count: int = 2
) -> np.ndarray:
    if isinstance(spec, PythonData):
        from deeprig.data.python import first_samples as python_samples

        return python_samples(spec, count)
    if isinstance(spec, ParquetData):
        import pyarrow.dataset as pads

        from deeprig.data.arrow import column_array

        table = pads.dataset(spec.path, format="parquet").head(count, columns=spec.features)
        x = np.stack([column_array(table.column(c)) for c in spec.features], axis=1)
        return x.reshape(len(x), *info.input_shape).astype(np.float32)
    from deeprig.data.builtin import builtin_arrays

    x, _ = builtin_arrays(spec, 0)
    return x[:count]
