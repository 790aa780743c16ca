"""`deeprig runs` and `deeprig ui` over a store that holds a run. The stores the tests
only read are made once for the module (a new store's migrations take seconds); each is
read through its own deeprig home."""

from __future__ import annotations

from pathlib import Path

import pytest
from deeprig.cli import app
from deeprig.tracking.runs import RunRecorder
from deeprig.tracking.store import embedded_target
from mlflow import MlflowClient
from typer.testing import CliRunner

from tests.conftest import deeprig_home_at, embedded_store_client


def record_a_run(home: Path, folder: Path) -> str:
    """A finished train run `view-me` in experiment `views`, val_accuracy 0.875: its id."""
    target = embedded_target(home)
    spec = {"name": "view-me", "kind": "train", "optim": {"lr": 0.1}}
    recorder = RunRecorder.create(target, "views", spec, "name: view-me\n", folder)
    embedded_store_client(home).log_metric(recorder.run_id, "val_accuracy", 0.875, step=0)
    recorder.finish("FINISHED")
    return recorder.run_id


def views(home: Path, *args: str, columns: int | None = None):
    """`deeprig ARGS` over the store of `home` (at `columns` wide)."""
    env = {"DEEPRIG_HOME": str(home), "MLFLOW_TRACKING_URI": None}
    if columns:
        env["COLUMNS"] = str(columns)
    return CliRunner().invoke(app, list(args), env=env)


@pytest.fixture(scope="module")
def store_with_a_run(tmp_path_factory):
    """(the deeprig home, the id of the one run its store holds)."""
    folder = tmp_path_factory.mktemp("store-with-a-run")
    with deeprig_home_at(folder / "deeprig-home") as home:
        return home, record_a_run(home, folder)


def test_runs_at_80_columns_keeps_the_run_id_whole(store_with_a_run):
    home, run_id = store_with_a_run
    result = views(home, "runs", columns=80)
    assert result.exit_code == 0, result.output
    header, *table = result.output.splitlines()  # (the header names the store, whole)
    assert all(len(line) <= 80 for line in table)
    line = next(row for row in result.output.splitlines() if run_id in row)
    assert "FINISHED" in line and "val_accuracy" in line and "0.875" in line


def test_runs_as_json_gives_whole_values_for_scripts(store_with_a_run):
    import json

    home, run_id = store_with_a_run
    result = views(home, "runs", "--output", "json")
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.output)
    assert record["run_id"] == run_id and record["value"] == 0.875
    assert record["store"].startswith("sqlite:///") and record["store"].endswith("mlflow.db")
    assert record["experiment"] == "views" and record["status"] == "FINISHED"


def test_runs_of_an_unknown_experiment_says_so(store_with_a_run):
    home, _ = store_with_a_run
    result = views(home, "runs", "-e", "nosuch")
    assert result.exit_code == 2
    assert "no experiment 'nosuch'" in result.output and "views" in result.output


def test_runs_lists_the_run_with_its_key_metric(store_with_a_run):
    home, run_id = store_with_a_run
    result = views(home, "runs", columns=200)
    assert result.exit_code == 0, result.output
    line = next(row for row in result.output.splitlines() if run_id[:12] in row)
    assert "view-me" in line and "FINISHED" in line and "0.875" in line


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_ui_serves_the_mlflow_ui_on_localhost(deeprig_home, tmp_path, tracking_ui):
    # (Slow: in CI, tests/e2e/test_tracking_ui.py starts the same `deeprig ui` over a
    # store, reads a run's metric through it and checks its stop leaves no process.)
    run_id = record_a_run(deeprig_home, tmp_path)  # (in the home the UI serves)
    client = MlflowClient(tracking_ui.url)
    run = client.get_run(run_id)  # the UI's API serves the configured store
    assert run.data.metrics["val_accuracy"] == 0.875
    left = tracking_ui.stop()  # the server and any workers it started
    assert left == [], f"the UI left a process behind: {left}"


@pytest.fixture(scope="module")
def store_with_a_search(tmp_path_factory):
    """A search (parent run) with three trial runs and a long job name, next to a train run
    whose last epoch was worse than its best checkpoint: (the deeprig home, the parent's
    id, the trials' ids, the train run's id)."""
    from deeprig.tracking.key_metric import record_key_metric
    from deeprig.tracking.tags import MLFLOW_PARENT_RUN_ID, Tag

    folder = tmp_path_factory.mktemp("store-with-a-search")
    with deeprig_home_at(folder / "deeprig-home") as home:
        target = embedded_target(home)
        name = "digits-cnn-search-with-a-long-name"
        parent = RunRecorder.create(target, "views", {"name": name, "kind": "tune"}, "", folder)
        record_key_metric(parent, "val_accuracy", 0.9944)
        trials = []
        for i in range(3):
            spec = {"name": f"{name}-trial", "kind": "train"}
            tags = {MLFLOW_PARENT_RUN_ID: parent.run_id, Tag.TRIAL_ID: f"t{i}"}
            trial = RunRecorder.create(target, "views", spec, "", folder, extra_tags=tags)
            trial.finish("FINISHED")
            trials.append(trial.run_id)
        parent.finish("FINISHED")
        wine = RunRecorder.create(target, "views", {"name": "wine", "kind": "train"}, "", folder)
        wine.log_metrics({"val_accuracy": 0.75})  # the last epoch
        record_key_metric(wine, "val_accuracy", 0.972)  # the checkpoint logged as the model
        wine.finish("FINISHED")
        return home, parent.run_id, trials, wine.run_id


def test_runs_shows_the_best_checkpoints_value_labelled_as_such(store_with_a_search):
    home, _, _, wine = store_with_a_search
    result = views(home, "runs", columns=80)
    lines = result.output.splitlines()
    at = next(i for i, row in enumerate(lines) if wine in row)
    assert "0.972" in lines[at] and "0.75" not in lines[at]
    # at 80 columns the label may take two lines, broken between its words
    assert "best" in lines[at].split() and lines[at + 1].split() == ["val_accuracy"]
    wide = views(home, "runs", columns=160)
    row = next(row for row in wide.output.splitlines() if wine in row)
    assert "FINISHED best val_accuracy 0.972" in " ".join(row.split())


def test_runs_counts_a_searchs_trials_on_its_line_and_lists_them_with_trials(
    store_with_a_search,
):
    import json

    home, parent, trials, _ = store_with_a_search
    listed = views(home, "runs", "-o", "json", "--limit", "2")
    records = json.loads(listed.output)
    assert [r["run_id"] for r in records][1] == parent  # the trials do not take the places
    assert records[1]["trials"] == 3 and not any(r["run_id"] in trials for r in records)
    result = views(home, "runs", "--trials", columns=120)
    lines = result.output.splitlines()
    at = next(i for i, row in enumerate(lines) if parent in row)
    assert [trial in lines[at + 1 + i] for i, trial in enumerate(trials)] == [True] * 3
    assert all("  digits-cnn" in lines[at + 1 + i] for i in range(3))  # indented


def test_runs_at_80_columns_shortens_names_with_an_ellipsis_and_names_its_store(
    store_with_a_search,
):
    home, parent, _, _ = store_with_a_search
    result = views(home, "runs", columns=80)
    lines = result.output.splitlines()
    assert lines[0].startswith("runs in sqlite:///") and "(the embedded store)" in lines[0]
    assert all(len(line) <= 80 for line in lines[1:])
    line = next(row for row in lines if parent in row)
    assert "…" in line and "0.9944" in line
    assert not any("long-name" in row for row in lines)  # never the rest on a line below


def test_eval_of_a_train_run_exits_2_before_rllib_saying_what_scores_its_model(
    store_with_a_run,
):
    home, run_id = store_with_a_run
    result = views(home, "eval", run_id, columns=200)
    assert result.exit_code == 2, result.output
    assert "rolls out rl policies" in result.output
    assert f"runs:/{run_id}/model" in result.output
    assert "Traceback" not in result.output


def test_the_job_history_shows_each_jobs_key_metric_and_its_store(deeprig_home, tmp_path):
    import json

    from deeprig.tracking.key_metric import record_key_metric
    from deeprig.tracking.tags import Tag

    target = embedded_target(deeprig_home)
    tags = {Tag.JOB_STATUS: "SUCCEEDED", Tag.RAY_SUBMISSION_ID: "deeprig-wine-1a2b3c4d"}
    spec = {"name": "wine", "kind": "train"}
    run = RunRecorder.create(target, "views", spec, "", tmp_path, extra_tags=tags)
    record_key_metric(run, "val_accuracy", 0.972)
    run.finish("FINISHED")
    listed = CliRunner().invoke(app, ["list", "--history", "-o", "json"])
    (record,) = json.loads(listed.output)
    assert (record["metric"], record["value"]) == ("best_val_accuracy", 0.972)
    assert record["store"] == target.uri
    table = CliRunner().invoke(app, ["list", "--history"], env={"COLUMNS": "160"})
    assert table.output.startswith(f"job history in {target.uri} (the embedded store)")
    row = next(line for line in table.output.splitlines() if run.run_id in line)
    assert "best val_accuracy 0.972" in " ".join(row.split())
