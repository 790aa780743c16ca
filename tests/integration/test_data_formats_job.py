"""Train jobs over an image folder, a CSV of sentences and a time series on a real local
Ray with a real MLflow store: what each records (preprocessing, class names, scores,
confusion matrices, the test set) and that its logged model reads raw inputs, through
mlflow.pytorch and mlflow.pyfunc. (A table trains end to end and its model scores a CSV in
test_predict_job; a data function's table is standardised like Parquet in
tests/unit/test_python_tables.py, and its logged model scores a CSV by column name in a
plain script in tests/unit/test_logged_model.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import mlflow.models
import mlflow.pytorch
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from tests.integration.conftest import run_in_fresh_home

pytestmark = pytest.mark.usefixtures("ray_2_cpus")


def logged_model(client, run_id: str):
    """The run's logged model, as `mlflow.pytorch.load_model` gives it to a user."""
    mlflow.set_tracking_uri(client.tracking_uri)
    return mlflow.pytorch.load_model(f"runs:/{run_id}/model")


def write_spec(folder: Path, spec: dict) -> str:
    path = folder / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def light_and_dark(root: Path, per_class: int, seed: int) -> Path:
    """Two classes a CNN tells apart: bright or dark 8x8 squares, with noise."""
    rng = np.random.default_rng(seed)
    for name, level in (("dark", 60), ("light", 190)):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(level, 40, size=(8, 8)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def image_job(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    spec = {
        "name": "squares",
        "kind": "train",
        "model": {"name": "cnn", "channels": [4], "hidden": 8},
        "data": {
            "source": "images",
            "path": str(light_and_dark(folder / "train", 40, 0)),
            "test_path": str(light_and_dark(folder / "test", 10, 1)),
            "augment": {"flip": True, "crop_padding": 1},
        },
        "optim": {"lr": 0.01, "batch_size": 16, "num_epochs": 3},
        "scaling": {"num_workers": 2},
    }
    result, client = run_in_fresh_home(tmp_path_factory, "images", write_spec(folder, spec))
    assert result.exit_code == 0, result.output
    (run,) = client.search_runs([client.get_experiment_by_name("squares").experiment_id])
    return result, client, run


def test_an_image_folder_trains_and_scores_its_test_set(image_job):
    result, client, run = image_job
    metrics = run.data.metrics
    assert metrics["val_accuracy"] >= 0.9 and metrics["test_accuracy"] >= 0.9
    assert 0.0 < metrics["val_f1_macro"] <= 1.0 and metrics["val_auc"] > 0.9
    assert "test_f1_macro" in metrics and "test_auc" in metrics
    assert "test_accuracy" in result.output  # the closing table shows it
    assert run.data.params["data.classes"] == "dark, light"
    plots = {f.path for f in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/confusion_matrix_val.png", "plots/confusion_matrix_test.png"} <= plots


def test_normalisation_is_recorded_and_applied_by_the_logged_model(image_job):
    _, client, run = image_job
    record = json.loads(
        Path(
            client.download_artifacts(run.info.run_id, "preprocessing/preprocessing.json")
        ).read_text()
    )
    assert record["classes"] == ["dark", "light"] and record["fitted_on_rows"] == 64
    (mean,), (std,) = record["input_mean"], record["input_std"]
    assert 0.35 < mean < 0.65 and 0.1 < std < 0.5  # of pixels in [0, 1]
    model = logged_model(client, run.info.run_id)
    raw = torch.stack([torch.full((1, 8, 8), 40 / 255), torch.full((1, 8, 8), 210 / 255)])
    assert model(raw).argmax(dim=1).tolist() == [0, 1]  # raw pixels in, dark then light
    served = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    assert served.predict(raw.numpy()).tolist() == ["dark", "light"]  # the class names
    proba = served.predict(raw.numpy(), params={"proba": True})
    assert list(proba.columns) == ["dark", "light"] and proba["light"].iloc[1] > 0.5


def test_an_image_folder_held_in_memory_and_streamed_gives_the_same_rows(tmp_path):
    """The two ways a folder reaches the workers (arrays decoded by Ray tasks, or a Ray
    Data stream) split, label, decode and normalise it identically."""
    from deeprig.data import build_datasets, describe_data
    from deeprig.spec.data import ImagesData

    spec = ImagesData(source="images", path=str(light_and_dark(tmp_path, 30, 2)))
    info = describe_data(spec)
    held = build_datasets(spec, info, 7, 2, 0.5, in_memory=True)
    streamed = build_datasets(spec, info, 7, 2, 0.5, in_memory=False)
    assert held.arrays is not None
    # (exact sums of bytes in the tasks against sums of float32 values in Ray Data)
    assert held.fitted.input_mean == pytest.approx(streamed.fitted.input_mean, rel=1e-6)
    assert held.fitted.input_std == pytest.approx(streamed.fitted.input_std, rel=1e-6)
    assert held.fitted.stats_shape == streamed.fitted.stats_shape == (1, 1, 1)
    assert held.fitted.fitted_on_rows == info.num_train == 48

    def in_one_order(x: np.ndarray, y: np.ndarray):  # (Ray Data may reorder blocks)
        order = np.lexsort((x.reshape(len(x), -1).sum(axis=1), y))
        return x[order], y[order]

    for name in ("train", "val"):
        rows = getattr(streamed, name).take_all()
        x, y = in_one_order(*held.arrays[name])
        stream_x, stream_y = in_one_order(
            np.stack([r["x"] for r in rows]), np.array([r["y"] for r in rows])
        )
        assert np.array_equal(y, stream_y)  # the same files on each side of the split
        np.testing.assert_allclose(x, stream_x, rtol=1e-5, atol=1e-6)
    train_x = held.arrays["train"][0]
    assert abs(train_x.mean()) < 1e-5 and abs(train_x.std() - 1) < 1e-4  # normalised


POSITIVE = ["good", "great", "fine", "lovely", "superb", "fun"]
NEGATIVE = ["bad", "awful", "dull", "boring", "poor", "weak"]


def sentences(count: int, seed: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    filler = ["the", "film", "was", "a", "plot", "and", "very", "cast"]
    rows = []
    for i in range(count):
        label = "pos" if i % 2 else "neg"
        words = list(rng.choice(filler, size=int(rng.integers(2, 8))))
        words.insert(int(rng.integers(0, len(words))), rng.choice(POSITIVE if i % 2 else NEGATIVE))
        rows.append((" ".join(words), label))
    return rows


@pytest.fixture(scope="module")
def text_job(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text")
    csv = folder / "reviews.csv"
    csv.write_text(
        "text,label\n" + "\n".join(f'"{t}",{lbl}' for t, lbl in sentences(400, 0)) + "\n"
    )
    spec = {
        "name": "sentences",
        "kind": "train",
        "model": {"name": "gru", "hidden_size": 16, "embedding_dim": 8, "pooling": "mean"},
        "data": {
            "source": "text",
            "path": str(csv),
            "text": "text",
            "label": "label",
            "tokenizer": {"max_length": 12},
        },
        "optim": {"lr": 0.02, "batch_size": 32, "num_epochs": 4},
    }
    result, client = run_in_fresh_home(tmp_path_factory, "text", write_spec(folder, spec))
    assert result.exit_code == 0, result.output
    (run,) = client.search_runs([client.get_experiment_by_name("sentences").experiment_id])
    return client, run


def test_text_trains_a_tokenizer_and_the_logged_model_reads_sentences(text_job):
    client, run = text_job
    assert run.data.metrics["val_accuracy"] >= 0.9
    assert run.data.params["data.classes"] == "neg, pos"
    paths = {f.path for f in client.list_artifacts(run.info.run_id, "preprocessing")}
    assert "preprocessing/tokenizer.json" in paths
    model = logged_model(client, run.info.run_id)
    assert model.predict(["a superb film", "the plot was dull"]) == ["pos", "neg"]
    assert run.data.tags["deeprig.model_format"] == "pickle"
    served = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    reviews = pd.DataFrame({"text": ["a superb film", "the plot was dull"]})
    assert served.predict(reviews).tolist() == ["pos", "neg"]


@pytest.fixture(scope="module")
def series_job(tmp_path_factory):
    folder = tmp_path_factory.mktemp("series")
    steps = np.arange(600)
    level = 100 + 0.05 * steps + 3 * np.sin(2 * np.pi * steps / 25)  # trend + season
    csv = folder / "series.csv"
    csv.write_text("value\n" + "\n".join(f"{v:.5f}" for v in level) + "\n")
    spec = {
        "name": "wave",
        "kind": "train",
        "model": {"name": "lstm", "hidden_size": 16},
        "data": {
            "source": "timeseries",
            "path": str(csv),
            "columns": ["value"],
            "target": "value",
            "window": 25,
            "horizon": 5,
        },
        "optim": {"lr": 0.01, "batch_size": 32, "num_epochs": 6},
        "checkpoint": {"metric": "val_rmse"},
    }
    result, client = run_in_fresh_home(tmp_path_factory, "series", write_spec(folder, spec))
    assert result.exit_code == 0, result.output
    (run,) = client.search_runs([client.get_experiment_by_name("wave").experiment_id])
    return result, client, run, level


def test_a_series_forecast_beats_persistence_in_its_own_units(series_job):
    result, client, run, level = series_job
    metrics = run.data.metrics
    assert metrics["val_rmse"] < 0.8 * metrics["val_rmse_persistence"]
    assert metrics["val_mae"] < metrics["val_mae_persistence"]
    assert "val_rmse_persistence" in result.output
    # every step 1..5, on average, beats persistence too
    assert metrics["val_rmse_all_steps"] < metrics["val_rmse_all_steps_persistence"]
    assert metrics["val_rmse_all_steps"] < metrics["val_rmse"]  # (nearer steps err less)
    model = logged_model(client, run.info.run_id)
    window = torch.tensor(level[500:525], dtype=torch.float32).reshape(1, 25, 1)
    forecast = model(window)  # the series' own values in, its values 1..5 steps on out
    assert forecast.shape == (1, 5)
    assert abs(forecast[0, -1].item() - level[529]) < 0.5 * abs(level[529] - level[524])
    assert (abs(forecast[0] - torch.tensor(level[525:530])) < 0.5).all()
    info = mlflow.models.get_model_info(f"runs:/{run.info.run_id}/model")
    assert info.signature.outputs.inputs[0].shape == (-1, 5)  # (windows, horizon)
