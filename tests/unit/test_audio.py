"""The audio source: the mel filterbank and log-mel, the header checks that exit 2 before
Ray starts, spectrogram masking, and the logged model that reads waveforms."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from deeprig.data.audio import as_view, build_audio, describe_audio, log_mels
from deeprig.data.info import DataProblem
from deeprig.data.mel import LogMel, hz_to_mel, mel_filterbank
from deeprig.data.pipeline import BuildOptions
from deeprig.data.sources import source_of
from deeprig.spec.data import AudioData, MaskSpec
from deeprig.training.augment import spectrogram_masks
from torch import nn


def _tone(hz: float, rate: int, seconds: float = 0.25) -> np.ndarray:
    return 0.5 * np.sin(2 * np.pi * hz * np.arange(int(rate * seconds)) / rate)


def _write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    """A 16-bit mono WAV written with the standard library."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((samples * 32767).astype("<i2").tobytes())


def _folder(root: Path, rates=(8000, 8000), classes=("low", "high")) -> Path:
    for label, hz in zip(classes, (300, 2000), strict=False):
        for i, rate in enumerate(rates):
            _write_wav(root / label / f"{i}.wav", _tone(hz, rate), rate)
    return root


def _spec(path: Path, **fields) -> AudioData:
    return AudioData(source="audio", path=str(path), duration_s=0.25, n_mels=16, **fields)


def test_each_mel_filter_peaks_at_its_centre_and_they_tile_the_spectrum():
    bank = mel_filterbank(n_mels=20, n_fft=512, sample_rate=16000)
    assert bank.shape == (257, 20)
    peaks = bank.argmax(dim=0)
    assert torch.all(peaks[1:] > peaks[:-1])  # centres rise with the band
    assert torch.all(bank.max(dim=0).values > 0.5)  # no empty band at this resolution
    covered = bank[1:-1].sum(dim=1)  # every bin between 0 Hz and Nyquist lies in a band
    assert torch.all(covered > 0.0)


@pytest.mark.parametrize("hz", [250.0, 1000.0, 3000.0])
def test_a_pure_tone_is_loudest_in_the_band_around_its_frequency(hz):
    rate, n_mels = 16000, 40
    log_mel = LogMel(rate, n_mels, window_ms=25, hop_ms=10)
    mels = log_mel(torch.from_numpy(_tone(hz, rate, 0.5)).float()[None])
    assert mels.shape == (1, n_mels, log_mel.frames(8000))
    loudest = int(mels[0].mean(dim=1).argmax())
    top = float(hz_to_mel(torch.tensor(rate / 2.0)))
    centres = [top * (band + 1) / (n_mels + 1) for band in range(n_mels)]
    expected = int(np.argmin([abs(c - float(hz_to_mel(torch.tensor(hz)))) for c in centres]))
    assert abs(loudest - expected) <= 1


def test_a_class_folder_is_described_as_log_mel_frames(tmp_path):
    info = describe_audio(_spec(_folder(tmp_path)))
    assert info.classes == ("high", "low") and info.num_rows == 4
    assert info.input_shape == (1 + 2000 // 80, 16)  # 0.25 s at 8 kHz, hop 80 samples
    image = describe_audio(_spec(tmp_path, view="image"))
    assert image.input_shape == (1, 16, 1 + 2000 // 80)


def test_an_empty_folder_exits_naming_the_path(tmp_path):
    (tmp_path / "yes").mkdir()
    with pytest.raises(DataProblem, match="no .wav/.flac/.ogg clips") as error:
        describe_audio(_spec(tmp_path))
    assert error.value.path == "data.path"


def test_a_single_class_exits(tmp_path):
    _folder(tmp_path, classes=("only",))
    with pytest.raises(DataProblem, match="one class") as error:
        describe_audio(_spec(tmp_path))
    assert error.value.path == "data.path"


def test_unreadable_files_are_counted_and_the_first_named(tmp_path):
    _folder(tmp_path)
    for name in ("a.wav", "b.wav"):
        (tmp_path / "low" / name).write_bytes(b"not a sound")
    with pytest.raises(DataProblem, match=r"2 of 6 files cannot be read.*a\.wav"):
        describe_audio(_spec(tmp_path))


def test_mixed_sample_rates_need_sample_rate(tmp_path):
    _folder(tmp_path, rates=(8000, 16000))
    with pytest.raises(DataProblem, match="8000 Hz.*16000 Hz") as error:
        describe_audio(_spec(tmp_path))
    assert error.value.path == "data.sample_rate"
    info = describe_audio(_spec(tmp_path, sample_rate=8000))
    assert info.input_shape == (26, 16)


def test_a_validation_folder_with_an_unknown_class_exits(tmp_path):
    _folder(tmp_path / "train")
    _folder(tmp_path / "val", classes=("low", "other"))
    spec = _spec(tmp_path / "train", val_path=str(tmp_path / "val"))
    with pytest.raises(DataProblem, match="other") as error:
        describe_audio(spec)
    assert error.value.path == "data.val_path"


def test_a_table_of_paths_and_labels_is_read_relative_to_itself(tmp_path):
    _folder(tmp_path / "clips")
    rows = ["file,word"] + [f"clips/{c}/{i}.wav,{c}" for c in ("low", "high") for i in (0, 1)]
    (tmp_path / "clips.csv").write_text("\n".join(rows) + "\n")
    info = describe_audio(_spec(tmp_path / "clips.csv", path_column="file", label="word"))
    assert info.classes == ("high", "low") and info.num_rows == 4
    with pytest.raises(DataProblem) as error:
        describe_audio(_spec(tmp_path / "clips.csv", path_column="file"))
    assert error.value.path == "data.label"


def test_band_statistics_come_from_the_training_split_and_resampling_keeps_the_tone(tmp_path):
    _folder(tmp_path / "train", rates=(8000, 8000, 8000))
    _folder(tmp_path / "val", rates=(16000,))
    spec = _spec(tmp_path / "train", val_path=str(tmp_path / "val"), sample_rate=8000)
    info = describe_audio(spec)
    prepared = build_audio(spec, info, BuildOptions(0, 1, 1.0, True))
    assert prepared.arrays is not None
    (x, y), (vx, vy) = prepared.arrays["train"], prepared.arrays["val"]
    assert x.shape == (6, *info.input_shape) and vx.shape == (2, *info.input_shape)
    assert np.allclose(x.mean(axis=(0, 1)), 0.0, atol=1e-4)  # each band: mean 0 on train
    fitted = prepared.fitted
    assert fitted.sample_rate == 8000 and fitted.fitted_on_rows == 6
    assert dict(fitted.baseline)["val_accuracy_logreg"] == 1.0  # tones are separable
    # The 16 kHz validation tones resampled to 8 kHz read as the 8 kHz training tones.
    low = info.class_names().index("low")
    resampled, own = vx[vy == low][0], x[y == low][0]
    assert resampled.mean(axis=0).argmax() == own.mean(axis=0).argmax()
    assert np.median(np.abs(resampled - own)) < 0.05  # (the filter's edges differ a little)


def test_the_logged_model_reads_waveforms_of_any_length(tmp_path):
    spec = _spec(_folder(tmp_path))
    info = describe_audio(spec)
    fitted = build_audio(spec, info, BuildOptions(0, 1, 1.0, True)).fitted
    model, exportable, _ = source_of(spec).serve(nn.Flatten(), fitted, spec, ["high", "low"])
    assert exportable and model.raw_input_shape == (2000,)
    waves = torch.from_numpy(_tone(300, 8000)).float()[None]
    features = as_view(spec, log_mels(spec, waves.numpy(), 8000))
    mean, std = (torch.from_numpy(a) for a in fitted.broadcast_stats())
    expected = ((torch.from_numpy(features) - mean) / std).flatten(1)
    assert torch.allclose(model(waves), expected, atol=1e-4)
    padded = torch.cat([waves[:, :1500], torch.zeros(1, 500)], dim=1)
    assert torch.allclose(model(waves[:, :1500]), model(padded))  # short: padded
    longer = torch.cat([waves, torch.ones(1, 300)], dim=1)
    assert torch.allclose(model(longer), model(waves))  # long: cut


@pytest.mark.parametrize("view", ["frames", "image"])
def test_masks_zero_whole_frames_and_bands_of_training_clips(view, tmp_path):
    spec = _spec(tmp_path, view=view, masking=MaskSpec(time_mask=5, freq_mask=3))
    augment = spectrogram_masks(spec)
    assert augment is not None
    shape = (64, 20, 16) if view == "frames" else (64, 1, 16, 20)
    torch.manual_seed(0)
    masked = augment(torch.ones(shape))
    mels = masked if view == "frames" else masked[:, 0].transpose(1, 2)  # (clip, frame, band)
    dead_frames = (mels == 0).all(dim=2).sum(dim=1)
    dead_bands = (mels == 0).all(dim=1).sum(dim=1)
    assert dead_frames.max() <= 5 and dead_bands.max() <= 3
    assert dead_frames.max() > 0 and dead_bands.max() > 0
    zeros = (mels == 0).sum(dim=(1, 2))
    assert torch.all(zeros <= dead_frames * 16 + dead_bands * 20)  # nothing else touched
    assert spectrogram_masks(_spec(tmp_path)) is None  # no masks asked for


def test_an_audio_job_reports_its_baseline_beside_its_accuracy(tmp_path):
    from deeprig.runners.train_metrics import CLOSING_METRICS, reported_metrics
    from deeprig.spec.train import TrainSpec

    data = _spec(_folder(tmp_path))
    spec = TrainSpec.model_validate(
        {"name": "words", "kind": "train", "model": {"name": "gru"}, "data": data.model_dump()}
    )
    assert {"val_accuracy", "val_accuracy_logreg"} <= reported_metrics(spec, describe_audio(data))
    assert "val_accuracy_logreg" in CLOSING_METRICS
