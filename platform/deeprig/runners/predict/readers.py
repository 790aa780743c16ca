"""The one table of predict inputs: each data class of the spec -> how predict reads an
input laid out as that source's training data (keyed as data/sources.py's SOURCES; a unit
test keeps the keys equal). A model is routed by the data spec its train run recorded."""

from __future__ import annotations

from deeprig.runners.predict.audio_input import audio_features, check_audio
from deeprig.runners.predict.file_input import folder_rows
from deeprig.runners.predict.image_input import check_images, image_features
from deeprig.runners.predict.inputs import Reader
from deeprig.runners.predict.model import PredictModel
from deeprig.runners.predict.series_input import check_series, series_features, series_rows
from deeprig.runners.predict.table_input import check_table, table_features, table_rows
from deeprig.spec.data import (
    AudioData,
    DigitsData,
    ImagesData,
    ParquetData,
    PythonData,
    SyntheticData,
    TextData,
    TimeseriesData,
)
from deeprig.spec.errors import Problem, SpecError

TABLE = Reader(check_table, table_rows, table_features, read_cpus=1.0)

# None: no input layout to score (a built-in data set's model reads arrays made in code).
READERS: dict[type, Reader | None] = {
    ParquetData: TABLE,
    TextData: TABLE,
    PythonData: TABLE,  # (a table's feature columns; arrays are refused by its check)
    ImagesData: Reader(check_images, folder_rows, image_features),
    AudioData: Reader(check_audio, folder_rows, audio_features),
    TimeseriesData: Reader(check_series, series_rows, series_features),
    DigitsData: None,
    SyntheticData: None,
}


def reader_of(model: PredictModel) -> Reader:
    """The model's reader, by the data it trained on; a model whose run recorded none
    reads a table (its pyfunc's columns say which)."""
    if model.data is None:
        return TABLE
    reader = READERS[type(model.data)]
    if reader is None:
        raise SpecError(
            [
                Problem(
                    "model",
                    f"this model trained on {model.data.source}, arrays made in code: "
                    "predict has no input of that layout (score it with mlflow.pyfunc)",
                )
            ]
        )
    return reader
