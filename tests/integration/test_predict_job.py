"""deeprig predict end to end: a tiny wine classifier trained on a CSV (`source: parquet`
reads it), then held-out rows scored by run id (CLI), by registry alias (Python) and by
checkpoint folder, against mlflow.pyfunc on the same rows; the predict runs' records; bad
input refused before Ray with no run left behind. One training job for the module."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import deeprig_home_at, embedded_store_client

pytestmark = pytest.mark.usefixtures("ray_2_cpus")

CLASSES = {0: "barolo", 1: "grignolino", 2: "barbera"}


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """(client, train run, home, folder, the CLI's result of predicting held_out.csv)."""
    from deeprig.cli import app
    from sklearn.datasets import load_wine
    from typer.testing import CliRunner

    folder = tmp_path_factory.mktemp("wine-predict")
    frame = load_wine(as_frame=True).frame
    frame.insert(0, "bottle", [f"b{i:03d}" for i in range(len(frame))])
    frame["kind"] = frame.pop("target").map(CLASSES)
    frame.to_csv(folder / "wine.csv", index=False)
    # Held-out rows as a user's file may be: whole numbers as integers, another order.
    held = frame.sample(60, random_state=1)
    held[["magnesium", "proline"]] = held[["magnesium", "proline"]].round().astype("int64")
    held[list(reversed(held.columns))].to_csv(folder / "held_out.csv", index=False)
    spec = {
        "name": "wine-csv",
        "kind": "train",
        "model": {"name": "mlp", "hidden": [32]},
        "data": {
            "source": "parquet",
            "path": str(folder / "wine.csv"),
            "features": list(load_wine().feature_names),
            "label": "kind",
        },
        "optim": {"lr": 0.01, "batch_size": 16, "num_epochs": 3},
        "tracking": {"register_as": "wine-csv"},
    }
    (folder / "wine.yaml").write_text(yaml.safe_dump(spec))
    home = folder / "deeprig-home"
    runner = CliRunner()
    with deeprig_home_at(home):
        trained = runner.invoke(app, ["run", str(folder / "wine.yaml")], catch_exceptions=False)
        assert trained.exit_code == 0, trained.output
        client = embedded_store_client(home)
        (run,) = client.search_runs([client.get_experiment_by_name("wine-csv").experiment_id])
        client.set_registered_model_alias("wine-csv", "champion", "1")
        result = runner.invoke(
            app,
            [
                "predict",
                run.info.run_id,
                str(folder / "held_out.csv"),
                "-o",
                str(folder / "scored.csv"),
                "--proba",
                "--id-columns",
                "bottle",
                "--batch-size",
                "16",
                "--workers",
                "2",
            ],
            catch_exceptions=False,
        )
    return client, run, home, folder, result


def predict_runs(client, **tags):
    experiment = client.get_experiment_by_name("wine-csv").experiment_id
    found = client.search_runs([experiment], filter_string="tags.`deeprig.kind` = 'predict'")
    return [r for r in found if all(r.data.tags.get(k) == v for k, v in tags.items())]


def test_a_csv_table_trains_like_parquet(scored):
    client, run, *_ = scored
    assert run.data.params["data.path"].endswith("wine.csv")
    assert run.data.metrics["val_accuracy"] >= 0.8


def test_predict_writes_ids_label_prediction_and_probabilities_as_pyfunc_does(scored):
    import mlflow.pyfunc

    client, run, home, folder, result = scored
    assert result.exit_code == 0, result.output
    assert "rows/s" in result.output and "accuracy" in result.output
    out = pd.read_csv(folder / "scored.csv")
    classes = sorted(CLASSES.values())
    assert list(out.columns) == ["bottle", "kind", "prediction", *[f"proba_{c}" for c in classes]]
    held = pd.read_csv(folder / "held_out.csv")
    assert out["bottle"].tolist() == held["bottle"].tolist()  # the input's order
    assert not list(folder.glob(".scored.csv.partial-*"))
    with deeprig_home_at(home):
        mlflow.set_tracking_uri(client.tracking_uri)
        model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
        expected = model.predict(held)
        proba = model.predict(held, params={"proba": True})
    assert out["prediction"].tolist() == list(expected)
    np.testing.assert_allclose(out[[f"proba_{c}" for c in classes]], proba[classes], atol=1e-6)


def test_the_predict_run_records_its_model_input_scores_and_output(scored):
    client, run, home, folder, result = scored
    (record,) = predict_runs(client, **{"deeprig.model.run_id": run.info.run_id})
    tags, metrics, params = record.data.tags, record.data.metrics, record.data.params
    assert record.info.status == "FINISHED"
    assert tags["deeprig.output.path"] == str(folder / "scored.csv")
    assert len(tags["deeprig.output.sha256"]) == 64
    assert metrics["rows"] == 60 and metrics["rows_per_s"] > 0 and "time.total_s" in metrics
    assert params["batch_size"] == "16" and params["workers"] == "2"
    out = pd.read_csv(folder / "scored.csv")
    accuracy = float(np.mean(out["prediction"] == out["kind"]))
    assert metrics["accuracy"] == pytest.approx(accuracy) and "f1_macro" in metrics
    (dataset,) = record.inputs.dataset_inputs
    assert dataset.dataset.source and "held_out.csv" in dataset.dataset.source
    assert {t.key: t.value for t in dataset.tags}["mlflow.data.context"] == "prediction"
    artifacts = {a.path for a in client.list_artifacts(record.info.run_id, "plots")}
    assert "plots/confusion_matrix.png" in artifacts


def test_a_registry_alias_scores_from_python_with_the_same_answers(scored):
    import deeprig

    client, run, home, folder, result = scored
    with deeprig_home_at(home):
        frame = deeprig.predict("models:/wine-csv@champion", folder / "held_out.csv")
    assert list(frame.columns) == ["kind", "prediction"]
    out = pd.read_csv(folder / "scored.csv")
    assert frame["prediction"].tolist() == out["prediction"].tolist()
    (record,) = predict_runs(client, **{"deeprig.model.name": "wine-csv"})
    assert record.data.tags["deeprig.model.version"] == "1"
    assert record.data.tags["deeprig.model.run_id"] == run.info.run_id


def test_the_actors_load_the_logged_models_own_files_with_no_store_to_open(scored):
    # (an actor given `runs:/` or `models:/` would open the tracking store to find the files:
    # SQLAlchemy's ~0.9 s of imports on each actor of an embedded store)
    from deeprig.cluster.tracking_target import resolve_tracking
    from deeprig.tracking.model_source import parse_model_ref, resolve_model

    client, run, home, folder, result = scored
    with deeprig_home_at(home):
        target = resolve_tracking(None, home)
        by_run = resolve_model(parse_model_ref(run.info.run_id), target)
        by_alias = resolve_model(parse_model_ref("models:/wine-csv@champion"), target)
    assert by_run.uri == f"runs:/{run.info.run_id}/model"  # (the lineage keeps its name)
    assert by_alias.location == by_run.location and by_run.location.startswith("file://")
    assert (Path(by_run.location.removeprefix("file://")) / "MLmodel").is_file()


def test_a_checkpoint_folder_scores_as_its_logged_model(scored):
    import deeprig

    client, run, home, folder, result = scored
    checkpoint = run.data.tags["deeprig.checkpoint_path"]
    with deeprig_home_at(home):
        frame = deeprig.predict(checkpoint, folder / "held_out.csv", proba=True)
    out = pd.read_csv(folder / "scored.csv")
    assert frame["prediction"].tolist() == out["prediction"].tolist()
    probabilities = [c for c in out.columns if c.startswith("proba_")]
    np.testing.assert_allclose(frame[probabilities], out[probabilities], atol=1e-5)


def test_missing_columns_and_models_exit_2_before_ray_with_no_run(scored):
    from deeprig.cli import app
    from typer.testing import CliRunner

    client, run, home, folder, result = scored
    pd.read_csv(folder / "held_out.csv").drop(columns=["proline", "hue"]).to_csv(
        folder / "partial.csv", index=False
    )
    before = len(predict_runs(client))
    with deeprig_home_at(home):
        runner = CliRunner()
        missing = runner.invoke(
            app, ["predict", run.info.run_id, str(folder / "partial.csv"), "-o", "x.csv"]
        )
        unknown = runner.invoke(
            app, ["predict", "models:/wine-csv@nope", str(folder / "partial.csv"), "-o", "x.csv"]
        )
        held_out, scored_csv = str(folder / "held_out.csv"), str(folder / "scored.csv")
        exists = runner.invoke(app, ["predict", run.info.run_id, held_out, "-o", scored_csv])

    def said(result) -> str:
        return " ".join(result.output.split())

    assert missing.exit_code == 2 and "'proline'" in said(missing) and "'hue'" in said(missing)
    assert unknown.exit_code == 2 and "@champion -> 1" in said(unknown)
    assert exists.exit_code == 2 and "--overwrite" in said(exists)
    assert len(predict_runs(client)) == before
    assert not Path("x.csv").exists()


BOUNDED = """
import json, resource, sys
import numpy as np, pyarrow as pa, pyarrow.parquet as pq, ray

source, big, out, model = sys.argv[1:5]
names = pq.read_schema(source).names
columns = [n for n in names if n not in ("bottle", "kind")]
writer = None
for part in range(40):  # 40 x 100k rows x 13 float64 columns: ~416 MB in memory
    rng = np.random.default_rng(part)
    table = pa.table({c: rng.normal(size=100_000) for c in columns})
    writer = writer or pq.ParquetWriter(big, table.schema, compression="none")
    writer.write_table(table)
writer.close()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
ray.init(num_cpus=2, object_store_memory=80 * 2**20, include_dashboard=False)
from deeprig.runners.predict import command_job, predict_spec, run
from rich.console import Console
spec = predict_spec(model, big, out, batch_size=4096)
outcome = run(spec, command_job(spec, Console(), None, False))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"rows": outcome.metrics["rows"], "grew": peak - before,
                  "input": pq.ParquetFile(big).metadata.serialized_size
                  + sum(pq.ParquetFile(big).metadata.row_group(i).total_byte_size
                        for i in range(pq.ParquetFile(big).num_row_groups))}))
"""


@pytest.mark.slow
def test_an_input_5x_the_object_store_streams_in_bounded_driver_memory(scored, tmp_path):
    """4M rows (~416 MB) through a Ray whose object store holds 80 MB: the driver's peak
    memory grows by far less than the input (it holds a batch at a time, never the file)."""
    import json
    import subprocess
    import sys

    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    client, run, home, folder, result = scored
    source = tmp_path / "columns.parquet"
    pq.write_table(pacsv.read_csv(folder / "wine.csv"), source)
    with deeprig_home_at(home):
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                BOUNDED,
                str(source),
                str(tmp_path / "big.parquet"),
                str(tmp_path / "big_scored.parquet"),
                run.info.run_id,
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["rows"] == 4_000_000
    assert measured["input"] > 5 * 80 * 2**20
    assert measured["grew"] < measured["input"] / 3
