"""An audio job end to end on a real local Ray and MLflow store: spoken words (espeak-ng
where it is installed, else tones of a pitch per class) as log-mel frames read by a GRU
with masking, validated on held-out voices, beside the logistic-regression baseline; the
logged model answers from raw waveforms through MLflow's pyfunc. One whole job: 31 s
here, most of it Ray's start."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
import soundfile
import yaml

from tests.conftest import JOBS, module_from_file
from tests.integration.conftest import run_in_fresh_home

pytestmark = pytest.mark.usefixtures("ray_2_cpus")

RATE = 16000


def _clips(root: Path) -> list[str]:
    """train/ and val/ class folders of a few dozen clips; the class names."""
    if shutil.which("espeak-ng"):
        speech = module_from_file("make_speech", JOBS / "make_speech_wavs.py")
        speech.write_speech(root, takes=1, voices=3)
        return list(speech.WORDS)
    rng = np.random.default_rng(0)
    classes = {"low": 300.0, "mid": 900.0, "high": 2500.0}
    for split, count in (("train", 12), ("val", 4)):
        for name, hz in classes.items():
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                t = np.arange(RATE) / RATE
                wave = 0.3 * np.sin(2 * np.pi * hz * t) + 0.05 * rng.normal(size=RATE)
                soundfile.write(root / split / name / f"{i}.wav", wave, RATE)
    return list(classes)


@pytest.fixture(scope="module")
def audio_job(tmp_path_factory):
    folder = tmp_path_factory.mktemp("speech")
    classes = _clips(folder)
    spec = {
        "name": "tiny-speech",
        "kind": "train",
        "model": {"name": "gru", "hidden_size": 32, "bidirectional": True, "pooling": "mean"},
        "data": {
            "source": "audio",
            "path": str(folder / "train"),
            "val_path": str(folder / "val"),
            "sample_rate": RATE,
            "n_mels": 20,
            "hop_ms": 20,
            "masking": {"time_mask": 4, "freq_mask": 2},
        },
        "optim": {"lr": 0.005, "batch_size": 16, "num_epochs": 4},
    }
    path = folder / "tiny-speech.yaml"
    path.write_text(yaml.safe_dump(spec))
    result, client = run_in_fresh_home(tmp_path_factory, "speech", str(path))
    assert result.exit_code == 0, result.output
    (run,) = client.search_runs([client.get_experiment_by_name("tiny-speech").experiment_id])
    return client, run, folder, sorted(classes)


def test_an_audio_job_logs_its_accuracy_beside_the_linear_baseline(audio_job):
    client, run, _, classes = audio_job
    metrics = run.data.metrics
    assert 0.0 <= metrics["val_accuracy_logreg"] <= 1.0
    assert metrics["val_accuracy"] > 1.5 / len(classes)  # better than chance
    history = client.get_metric_history(run.info.run_id, "val_accuracy_logreg")
    assert len(history) == 4  # beside every epoch
    local = client.download_artifacts(run.info.run_id, "preprocessing/preprocessing.json")
    recorded = json.loads(Path(local).read_text())
    assert recorded["sample_rate"] == RATE and len(recorded["input_mean"]) == 20


def test_the_logged_audio_model_reads_waveforms(audio_job):
    client, run, folder, classes = audio_job
    mlflow.set_tracking_uri(client.tracking_uri)
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    files = sorted((folder / "val").rglob("*.wav"))[:4]
    waves = np.zeros((len(files), RATE), dtype=np.float32)
    for row, file in enumerate(files):
        wave, rate = soundfile.read(file, dtype="float32")
        assert rate in (RATE, 22050)
        if rate != RATE:  # (espeak-ng writes 22.05 kHz: the model reads the trained rate)
            from scipy.signal import resample_poly

            wave = resample_poly(wave, 320, 441).astype(np.float32)
        waves[row, : min(RATE, len(wave))] = wave[:RATE]
    answers = list(np.asarray(model.predict(waves)).ravel())
    assert len(answers) == len(files) and set(answers) <= set(classes)
