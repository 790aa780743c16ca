"""An image folder scored by an image model: every file decoded, converted to the
model's channels and resized to its size as training did (data/image_decode.py); the
model's normalisation is inside it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deeprig.runners.predict.file_input import PATH, check_folder, file_opener, read_each
from deeprig.runners.predict.inputs import BadRows, PredictInput
from deeprig.spec.errors import Problem, SpecError

if TYPE_CHECKING:
    import pandas as pd

    from deeprig.runners.predict.model import PredictModel
    from deeprig.spec.predict import PredictSpec


def check_images(spec: PredictSpec, model: PredictModel) -> PredictInput:
    from deeprig.data.images import IMAGE_EXTENSIONS

    if getattr(model.data, "image_column", None) is not None:
        raise SpecError(
            [
                Problem(
                    "input",
                    "this model trained on Parquet image bytes: predict reads image folders "
                    "(save the images as files, one folder)",
                )
            ]
        )
    open_file = file_opener(spec.input)

    def readable(path: str) -> bool:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(open_file(path)):
                return True
        except (UnidentifiedImageError, OSError, ValueError):
            return False

    return check_folder(spec, model, IMAGE_EXTENSIONS, readable, "images")


def image_features(model: PredictModel, batch: pd.DataFrame) -> tuple[Any, BadRows]:
    from deeprig.data.image_decode import decode_images

    paths = [str(p) for p in batch[PATH]]
    open_file = file_opener(paths[0]) if paths else str
    shape = model.input_shape
    return read_each(paths, lambda part: decode_images([open_file(p) for p in part], shape))
