"""An audio folder scored by an audio model (`source: audio`): every clip read at the
rate the model trained at, mono, padded or cut to its length (data/audio.py's
`read_waves`); the log-mel spectrogram and its standardisation are inside the model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deeprig.runners.predict.file_input import PATH, check_folder, read_each
from deeprig.runners.predict.inputs import BadRows, PredictInput

if TYPE_CHECKING:
    import pandas as pd

    from deeprig.runners.predict.model import PredictModel
    from deeprig.spec.predict import PredictSpec


def check_audio(spec: PredictSpec, model: PredictModel) -> PredictInput:
    from deeprig.data.audio import AUDIO_SUFFIXES

    def readable(path: str) -> bool:
        import soundfile

        try:
            soundfile.info(path)
            return True
        except (RuntimeError, OSError, soundfile.LibsndfileError):
            return False

    return check_folder(spec, model, AUDIO_SUFFIXES, readable, "sound files")


def clip_rate(model: PredictModel) -> int:
    """The rate the model's clips were read at: the spec's, else what its length says
    (its samples are duration_s x rate, rounded up)."""
    data = model.data
    (length,) = model.input_shape
    return int(data.sample_rate or round(length / data.duration_s))


def audio_features(model: PredictModel, batch: pd.DataFrame) -> tuple[Any, BadRows]:
    from deeprig.data.audio import read_waves

    rate, (length,) = clip_rate(model), model.input_shape
    paths = [str(p) for p in batch[PATH]]
    return read_each(paths, lambda part: read_waves(part, rate, length))
