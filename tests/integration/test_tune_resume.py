"""A search whose driver died continues with `deeprig run JOB --resume`: every trial in the
end, each with exactly one MLflow run, under the same parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from deeprig.cli import app
from mlflow import MlflowClient
from typer.testing import CliRunner

from tests.conftest import JOBS

SETTINGS = [
    "--set",
    "search.num_samples=4",
    "--set",
    "base.optim.num_epochs=4",
    "--set",
    "scheduler.name=fifo",
    "--set",
    "search.max_concurrent_trials=2",
    "--set",
    "tracking.experiment=resume",
]


def runs_of(client: MlflowClient):
    exp = client.get_experiment_by_name("resume")
    return client.search_runs([exp.experiment_id]) if exp else []


@pytest.mark.timeout(600)
def test_killed_search_driver_resumes_without_duplicate_runs(deeprig_home, ray_2_cpus):
    job = str(JOBS / "tune_digits_cnn_asha.yaml")
    # The first driver runs in its own process (and session) so it can be killed outright.
    driver = subprocess.Popen(
        [sys.executable, "-m", "deeprig.cli", "run", job, *SETTINGS],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=dict(os.environ, DEEPRIG_HOME=str(deeprig_home)),
    )
    client = MlflowClient(f"sqlite:///{deeprig_home / 'mlflow.db'}")
    finished_before = []
    deadline = time.time() + 300
    try:
        while time.time() < deadline and not finished_before:
            time.sleep(1)
            if (deeprig_home / "mlflow.db").exists():
                finished_before = [
                    r
                    for r in runs_of(client)
                    if r.info.status == "FINISHED" and r.data.tags.get("deeprig.kind") == "train"
                ]
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    assert finished_before, "no trial finished before the deadline"
    assert len(finished_before) < 4, "the search ended before the driver could be killed"
    (parent,) = [r for r in runs_of(client) if r.data.tags.get("deeprig.kind") == "tune"]
    assert parent.info.status == "RUNNING"  # the dead driver could not close it

    result = CliRunner().invoke(app, ["run", job, *SETTINGS, "--resume"], catch_exceptions=False)
    assert result.exit_code == 0, result.output

    runs = runs_of(client)
    parents = [r for r in runs if r.data.tags.get("deeprig.kind") == "tune"]
    children = [r for r in runs if r.data.tags.get("deeprig.kind") == "train"]
    assert [p.info.run_id for p in parents] == [parent.info.run_id]
    assert parents[0].info.status == "FINISHED"
    assert len(children) == 4
    assert len({c.data.tags["deeprig.trial_id"] for c in children}) == 4
    assert all(c.info.status == "FINISHED" for c in children)
    # A trial that finished before the crash was not trained again.
    done = finished_before[0].info.run_id
    assert len(client.get_metric_history(done, "val_accuracy")) == 4


def test_resume_without_an_unfinished_search_is_refused(deeprig_home):
    result = CliRunner().invoke(app, ["run", str(JOBS / "tune_digits_cnn_asha.yaml"), "--resume"])
    assert result.exit_code == 2
    assert "no unfinished search named 'tune-digits-cnn-asha'" in result.output
