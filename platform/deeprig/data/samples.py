"""A few real samples of any data source, in the shape the model reads: what the dry run
of a user's model is fed before Ray starts."""

from __future__ import annotations

import numpy as np

from deeprig.data.info import DataInfo
from deeprig.spec.data import (
    DataSpec,
    ImagesData,
    ParquetData,
    PythonData,
    TextData,
    TimeseriesData,
)


def first_samples(spec: DataSpec, info: DataInfo, count: int = 2) -> np.ndarray:
    if isinstance(spec, PythonData):
        from deeprig.data.python import first_samples as python_samples

        return python_samples(spec, count)
    if isinstance(spec, ParquetData):
        import pyarrow.dataset as pads

        from deeprig.data.arrow import column_array

        table = pads.dataset(spec.path, format="parquet").head(count, columns=spec.features)
        x = np.stack([column_array(table.column(c)) for c in spec.features], axis=1)
        return x.reshape(len(x), *info.input_shape).astype(np.float32)
    if isinstance(spec, ImagesData):
        return _image_samples(spec, info, count)
    if isinstance(spec, TextData):
        from deeprig.data.text import encode, read_table, train_tokenizer

        texts = read_table(spec.path, [spec.text]).column(spec.text).to_pylist()[:1000]
        tokenizer = train_tokenizer([t or "" for t in texts], spec.tokenizer)
        return encode(tokenizer, [t or "" for t in texts[:count]])
    if isinstance(spec, TimeseriesData):
        from deeprig.data.timeseries import series_arrays

        (x, _), _, _ = series_arrays(spec, info)
        return x[:count]
    from deeprig.data.builtin import builtin_arrays

    x, _ = builtin_arrays(spec, 0)
    return x[:count]


def _image_samples(spec: ImagesData, info: DataInfo, count: int) -> np.ndarray:
    if spec.image_column is not None:
        import pyarrow.dataset as pads

        table = pads.dataset(spec.path, format="parquet").head(count, columns=[spec.image_column])
        blobs = table.column(spec.image_column).to_pylist()
    else:
        from deeprig.data.images import list_image_folder

        folder = list_image_folder(spec.path, "data.path")
        blobs = [folder.open(path) for path in folder.files[:count]]
    from deeprig.data.images import decode_images

    return decode_images(blobs, info.input_shape)  # as the pipeline decodes them
