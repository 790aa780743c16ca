"""Sound clips (`source: audio`): a folder with one sub-folder per class, or a CSV/Parquet
table of file paths and labels. Every file's header is read on the driver before Ray
starts (soundfile, libsndfile: WAV, FLAC, OGG); the clips are read as mono, resampled to
one rate (scipy's polyphase filter), padded or cut to `duration_s` and made log-mel
spectrograms with torch's STFT (data/mel.py), standardised per mel band with statistics
of the training split. The spectrograms are made once, on the driver: the statistics need
the training split's anyway, and the workers get them as arrays (a quarter of the
waveforms' size at a 10 ms hop and 40 bands). A logistic regression on the same features
is the baseline the network is logged beside. Masking, the augmentation, happens on the
workers (training/augment.py)."""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deeprig.data.info import DataInfo, DataProblem, Fitted, num_val_rows
from deeprig.data.pipeline import BuildOptions, PreparedData, datasets_from_numpy, from_arrays
from deeprig.spec.data import AUDIO_SUFFIXES, AudioData

# Clips featurised per torch call: bounds the STFT's memory on long clips.
_CHUNK = 256


@dataclass(frozen=True)
class Clips:
    paths: list[str]
    labels: list[str]


def describe_audio(spec: AudioData) -> DataInfo:
    train = list_clips(spec, spec.path, "data.path")
    classes = sorted(set(train.labels))
    if len(classes) < 2:
        raise DataProblem(
            "data.path",
            f"every clip under {spec.path!r} is of one class ({classes[0]!r}): a classifier "
            "needs two or more (one sub-folder, or label value, per class)",
        )
    rates = header_rates(train, "data.path")
    held_out = 0
    for field, path in (("data.val_path", spec.val_path), ("data.test_path", spec.test_path)):
        if path is None:
            continue
        clips = list_clips(spec, path, field)
        unknown = sorted(set(clips.labels) - set(classes))
        if unknown:
            raise DataProblem(field, f"classes {unknown} are in {path!r} but not in data.path")
        rates += header_rates(clips, field)
        if field == "data.val_path":
            held_out = len(clips.paths)
    if spec.sample_rate is None and len(rates) > 1:
        found = ", ".join(f"{rate} Hz ({count} files)" for rate, count in sorted(rates.items()))
        raise DataProblem(
            "data.sample_rate",
            f"the clips' sample rates differ: {found}; set data.sample_rate to the rate to "
            "resample them all to (e.g. 16000)",
        )
    rate = spec.sample_rate or next(iter(rates))
    num_val = held_out or num_val_rows(len(train.paths), spec.val_fraction)
    return DataInfo(
        input_shape=feature_shape(spec, rate),
        task="classification",
        num_outputs=len(classes),
        num_rows=len(train.paths) + held_out,
        num_val=num_val,
        classes=tuple(classes),
    )


def list_clips(spec: AudioData, path: str, field: str) -> Clips:
    """The clips of a class-folder tree or a table of paths and labels (paths relative to
    the table's folder)."""
    where = Path(path)
    if where.is_file() and where.suffix in (".csv", ".parquet"):
        clips = _table_clips(spec, where, field)
    elif where.is_dir():
        found = [
            (str(file), folder.name)
            for folder in sorted(p for p in where.iterdir() if p.is_dir())
            for file in sorted(folder.rglob("*"))
            if file.suffix.lower() in AUDIO_SUFFIXES
        ]
        clips = Clips([p for p, _ in found], [label for _, label in found])
    else:
        raise DataProblem(field, f"no folder or .csv/.parquet table at {path!r}")
    if not clips.paths:
        raise DataProblem(
            field,
            f"no {'/'.join(AUDIO_SUFFIXES)} clips under {path!r}: put each class's clips in "
            "a sub-folder named after the class",
        )
    return clips


def _table_clips(spec: AudioData, table: Path, field: str) -> Clips:
    import pandas as pd

    frame = pd.read_csv(table) if table.suffix == ".csv" else pd.read_parquet(table)
    for column, name in ((spec.path_column, "path_column"), (spec.label, "label")):
        if column not in frame.columns:
            raise DataProblem(
                f"data.{name}",
                f"{column!r} is not a column of {str(table)!r} (columns: {list(frame.columns)})",
            )
    paths = [str(table.parent / p) for p in frame[spec.path_column].astype(str)]
    return Clips(paths, [str(label) for label in frame[spec.label]])


def header_rates(clips: Clips, field: str) -> collections.Counter:
    """Every file's header read (soundfile.info): their sample rates, counted; unreadable
    files exit 2 naming how many and the first."""
    import soundfile

    rates: collections.Counter = collections.Counter()
    unreadable = []
    for path in clips.paths:
        try:
            rates[soundfile.info(path).samplerate] += 1
        except (RuntimeError, OSError, soundfile.LibsndfileError):
            unreadable.append(path)
    if unreadable:
        raise DataProblem(
            field,
            f"{len(unreadable)} of {len(clips.paths)} files cannot be read as sound (the first: "
            f"{unreadable[0]!r}); remove them or convert them to WAV/FLAC/OGG",
        )
    return rates


def feature_shape(spec: AudioData, rate: int) -> tuple[int, ...]:
    """One clip's log-mel spectrogram as the model reads it (`view`)."""
    from deeprig.data.mel import LogMel

    frames = LogMel(rate, spec.n_mels, spec.window_ms, spec.hop_ms).frames(num_samples(spec, rate))
    return (frames, spec.n_mels) if spec.view == "frames" else (1, spec.n_mels, frames)


def num_samples(spec: AudioData, rate: int) -> int:
    return math.ceil(spec.duration_s * rate)


def clip_rate(spec: AudioData) -> int:
    """The rate every clip is read at: `sample_rate`, else the files' own (one, checked)."""
    if spec.sample_rate is not None:
        return spec.sample_rate
    import soundfile

    return soundfile.info(list_clips(spec, spec.path, "data.path").paths[0]).samplerate


def read_waves(paths: list[str], rate: int, length: int) -> np.ndarray:
    """(clips, length) float32 mono waveforms at `rate`, zero-padded or cut."""
    import soundfile
    from scipy.signal import resample_poly

    waves = np.zeros((len(paths), length), dtype=np.float32)
    for row, path in enumerate(paths):
        wave, own_rate = soundfile.read(path, dtype="float32", always_2d=True)
        mono = wave.mean(axis=1)
        if own_rate != rate:
            common = math.gcd(own_rate, rate)
            mono = resample_poly(mono, rate // common, own_rate // common).astype(np.float32)
        waves[row, : min(length, len(mono))] = mono[:length]
    return waves


def log_mels(spec: AudioData, waves: np.ndarray, rate: int) -> np.ndarray:
    """(clips, n_mels, frames) log-mel spectrograms, unstandardised."""
    import torch

    from deeprig.data.mel import LogMel

    featurise = LogMel(rate, spec.n_mels, spec.window_ms, spec.hop_ms)
    with torch.no_grad():
        parts = [
            featurise(torch.from_numpy(waves[start : start + _CHUNK])).numpy()
            for start in range(0, len(waves), _CHUNK)
        ]
    return np.concatenate(parts)


def as_view(spec: AudioData, mels: np.ndarray) -> np.ndarray:
    if spec.view == "frames":
        return np.ascontiguousarray(mels.transpose(0, 2, 1))
    return mels[:, None, :, :]


def build_audio(spec: AudioData, info: DataInfo, how: BuildOptions) -> PreparedData:
    from deeprig.data.builtin import split_indices

    rate = clip_rate(spec)
    class_ids = {name: i for i, name in enumerate(info.class_names())}
    train = list_clips(spec, spec.path, "data.path")
    if spec.val_path is not None:
        val = list_clips(spec, spec.val_path, "data.val_path")
        # Shuffled all the same: each worker's shard is a contiguous share of the rows.
        train = _subset(train, np.random.default_rng(how.seed).permutation(len(train.paths)))
    else:
        train_rows, val_rows = split_indices(len(train.paths), spec.val_fraction, how.seed)
        val = _subset(train, val_rows)
        train = _subset(train, train_rows)
    x_train, y_train = _features(spec, train, rate, class_ids)
    mean = x_train.mean(axis=(0, 2), keepdims=True)
    std = np.maximum(x_train.std(axis=(0, 2), keepdims=True), 1e-6)
    x_val, y_val = _features(spec, val, rate, class_ids)
    x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    fitted = Fitted(
        input_mean=tuple(mean.ravel().tolist()),
        input_std=tuple(std.ravel().tolist()),
        stats_shape=(1, spec.n_mels) if spec.view == "frames" else (1, spec.n_mels, 1),
        baseline=(("val_accuracy_logreg", logistic_baseline(x_train, y_train, x_val, y_val)),),
        fitted_on_rows=len(y_train),
        sample_rate=rate,
    )
    test = None
    if spec.test_path is not None:
        x_test, y_test = _features(
            spec, list_clips(spec, spec.test_path, "data.test_path"), rate, class_ids
        )
        test = datasets_from_numpy(as_view(spec, (x_test - mean) / std), y_test, 1)
    train_xy = (as_view(spec, x_train), y_train)
    return from_arrays(how.num_workers, train_xy, (as_view(spec, x_val), y_val), fitted, test)


def _subset(clips: Clips, rows: np.ndarray) -> Clips:
    return Clips([clips.paths[i] for i in rows], [clips.labels[i] for i in rows])


def _features(
    spec: AudioData, clips: Clips, rate: int, class_ids: dict[str, int]
) -> tuple[np.ndarray, np.ndarray]:
    waves = read_waves(clips.paths, rate, num_samples(spec, rate))
    labels = np.array([class_ids[label] for label in clips.labels], dtype=np.int64)
    return log_mels(spec, waves, rate), labels


def logistic_baseline(
    x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray
) -> float:
    """Validation accuracy of a logistic regression on the same standardised log-mel
    features, flattened: what the network has to beat. 50 L-BFGS steps: its validation
    accuracy is within a point of 100 steps' at a fifth of the time (thousands of features)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=50, C=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_train.reshape(len(x_train), -1), y_train)
    return float(model.score(x_val.reshape(len(x_val), -1), y_val))


def audio_samples(spec: AudioData, info: DataInfo, count: int) -> np.ndarray:
    rate = clip_rate(spec)
    paths = list_clips(spec, spec.path, "data.path").paths[:count]
    waves = read_waves(paths, rate, num_samples(spec, rate))
    return as_view(spec, log_mels(spec, waves, rate))


def audio_model(net, fitted: Fitted, spec: AudioData, classes: list[str]):
    """The classifier behind its featurising: it reads waveforms at the clips' rate."""
    import torch

    from deeprig.data.mel import LogMel
    from deeprig.models.wrappers import AudioClassifier

    assert fitted.sample_rate is not None and fitted.input_mean is not None
    rate = fitted.sample_rate
    shape = (1, spec.n_mels, 1)
    model = AudioClassifier(
        net,
        LogMel(rate, spec.n_mels, spec.window_ms, spec.hop_ms),
        torch.tensor(fitted.input_mean).reshape(shape),
        torch.tensor(fitted.input_std).reshape(shape),
        num_samples(spec, rate),
        spec.view,
    )
    return model, True, []
