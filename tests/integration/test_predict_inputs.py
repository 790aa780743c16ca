"""deeprig predict on files: a tiny CNN trained 1 epoch on a few hundred Fashion-MNIST
images scores a labelled test folder holding one file corrupted after its header (the
pre-flight reads headers only): with --skip-bad-rows every other image is scored as
mlflow.pyfunc scores it, the bad one counted and listed on the run; without, the job
fails naming the file. One training job for the module."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import (
    FASHION_SOURCE,
    JOBS,
    deeprig_home_at,
    embedded_store_client,
    module_from_file,
)

pytestmark = [
    pytest.mark.usefixtures("ray_2_cpus"),
    pytest.mark.skipif(not FASHION_SOURCE.is_dir(), reason="needs dataset-fashion-mnist"),
]


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """(client, train run, home, test folder, the bad file, CLI results: skipped, failed)."""
    from deeprig.cli import app
    from typer.testing import CliRunner

    folder = tmp_path_factory.mktemp("fashion-predict")
    fashion = module_from_file("make_fashion", JOBS / "make_fashion_images.py")
    images = fashion.write_fashion_folders(folder / "fashion", per_class=20)
    test = images / "test"
    # A PNG whose header reads but whose pixels do not: found only when decoded.
    good = sorted((test / "bag").iterdir())[0].read_bytes()
    bad = test / "bag" / "99999.png"
    bad.write_bytes(good[: len(good) // 2])
    spec = {
        "name": "fashion-tiny",
        "kind": "train",
        "model": {"name": "cnn", "channels": [4], "hidden": 16},
        "data": {"source": "images", "path": str(images / "train"), "channels": 1},
        "optim": {"lr": 0.01, "batch_size": 32, "num_epochs": 1},
        "scaling": {"num_workers": 1},
    }
    (folder / "train.yaml").write_text(yaml.safe_dump(spec))
    home = folder / "deeprig-home"
    runner = CliRunner()
    with deeprig_home_at(home):
        trained = runner.invoke(app, ["run", str(folder / "train.yaml")], catch_exceptions=False)
        assert trained.exit_code == 0, trained.output
        client = embedded_store_client(home)
        (run,) = client.search_runs([client.get_experiment_by_name("fashion-tiny").experiment_id])
        predict = ["predict", run.info.run_id, str(test), "--batch-size", "64"]
        skipped = runner.invoke(
            app,
            [*predict, "-o", str(folder / "scored.parquet"), "--proba", "--skip-bad-rows"],
            catch_exceptions=False,
        )
        failed = runner.invoke(
            app, [*predict, "-o", str(folder / "failed.parquet")], catch_exceptions=False
        )
    return client, run, home, test, bad, skipped, failed


def predict_runs(client, status):
    experiment = client.get_experiment_by_name("fashion-tiny").experiment_id
    found = client.search_runs([experiment], filter_string="tags.`deeprig.kind` = 'predict'")
    return [r for r in found if r.info.status == status]


def test_an_image_folder_is_scored_by_path_as_pyfunc_scores_it(scored):
    import mlflow.pyfunc
    from deeprig.data.image_decode import decode_images

    client, run, home, test, bad, skipped, failed = scored
    assert skipped.exit_code == 0, skipped.output
    assert "1 unreadable row(s) skipped" in " ".join(skipped.output.split())
    out = pd.read_parquet(test.parent.parent / "scored.parquet")
    classes = sorted(p.name for p in test.iterdir())
    assert list(out.columns) == ["path", "label", "prediction", *[f"proba_{c}" for c in classes]]
    assert len(out) == 200 and str(bad) not in set(out["path"])
    assert out["label"].tolist() == [p.split("/")[-2] for p in out["path"]]
    with deeprig_home_at(home):
        mlflow.set_tracking_uri(client.tracking_uri)
        model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
        pixels = decode_images(list(out["path"]), (1, 28, 28))
        expected = model.predict(pixels)
        proba = model.predict(pixels, params={"proba": True})
    assert out["prediction"].tolist() == list(expected)
    np.testing.assert_allclose(out[[f"proba_{c}" for c in classes]], proba[classes], atol=1e-6)


def test_the_skipped_file_is_counted_and_listed_on_the_run(scored):
    client, run, home, test, bad, skipped, failed = scored
    (record,) = predict_runs(client, "FINISHED")
    metrics = record.data.metrics
    assert metrics["rows"] == 200 and metrics["rows_skipped"] == 1
    assert "accuracy" in metrics  # (the class folders are its labels)
    listed = client.download_artifacts(record.info.run_id, "skipped_rows.csv")
    assert pd.read_csv(listed)["row"].tolist() == [str(bad)]


def test_without_skip_bad_rows_a_corrupt_file_fails_the_job_naming_it(scored):
    client, run, home, test, bad, skipped, failed = scored
    assert failed.exit_code == 1, failed.output
    (record,) = predict_runs(client, "FAILED")
    assert record.data.tags["deeprig.failure"] == "data"
    logs = [p.read_text() for p in (home / "logs").glob("predict-*.log")]
    assert any("99999.png cannot be read" in t and "--skip-bad-rows" in t for t in logs)
    assert not (test.parent.parent / "failed.parquet").exists()
