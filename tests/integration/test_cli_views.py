"""`deeprig runs` and `deeprig ui` over a store that holds a run."""

from __future__ import annotations

import pytest
from deeprig.cli import app
from deeprig.tracking.runs import RunRecorder
from deeprig.tracking.store import embedded_target
from mlflow import MlflowClient
from typer.testing import CliRunner


@pytest.fixture
def store_with_a_run(deeprig_home, mlflow_client, tmp_path):
    target = embedded_target(deeprig_home)
    spec = {"name": "view-me", "kind": "train", "optim": {"lr": 0.1}}
    recorder = RunRecorder.create(target, "views", spec, "name: view-me\n", tmp_path)
    mlflow_client.log_metric(recorder.run_id, "val_accuracy", 0.875, step=0)
    recorder.finish("FINISHED")
    return recorder.run_id


def test_runs_at_80_columns_keeps_the_run_id_whole(store_with_a_run):
    result = CliRunner().invoke(app, ["runs"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert all(len(line) <= 80 for line in result.output.splitlines())
    line = next(row for row in result.output.splitlines() if store_with_a_run in row)
    assert "FINISHED" in line and "val_accuracy 0.875" in line


def test_runs_as_json_gives_whole_values_for_scripts(store_with_a_run):
    import json

    result = CliRunner().invoke(app, ["runs", "--output", "json"])
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.output)
    assert record["run_id"] == store_with_a_run and record["value"] == 0.875
    assert record["experiment"] == "views" and record["status"] == "FINISHED"


def test_runs_of_an_unknown_experiment_says_so(store_with_a_run):
    result = CliRunner().invoke(app, ["runs", "-e", "nosuch"])
    assert result.exit_code == 2
    assert "no experiment 'nosuch'" in result.output and "views" in result.output


def test_runs_lists_the_run_with_its_key_metric(store_with_a_run):
    result = CliRunner().invoke(app, ["runs"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    line = next(row for row in result.output.splitlines() if store_with_a_run[:12] in row)
    assert "view-me" in line and "FINISHED" in line and "0.875" in line


@pytest.mark.timeout(120)
def test_ui_serves_the_mlflow_ui_on_localhost(store_with_a_run, tracking_ui):
    client = MlflowClient(tracking_ui.url)
    run = client.get_run(store_with_a_run)  # the UI's API serves the configured store
    assert run.data.metrics["val_accuracy"] == 0.875
    left = tracking_ui.stop()  # the server and any workers it started
    assert left == [], f"the UI left a process behind: {left}"
