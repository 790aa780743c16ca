"""A search whose driver died continues with `deeprig run JOB --resume`: every trial in the
end, each with exactly one MLflow run, under the same parent."""

from __future__ import annotations

import pytest
from deeprig.cli import app
from typer.testing import CliRunner

from tests.conftest import JOBS, runs_in

SETTINGS = [
    "--set",
    # 6 trials, 2 at a time: after the first pair ends, two more pairs are left to kill in.
    "search.num_samples=6",
    "--set",
    "base.optim.num_epochs=4",
    "--set",
    "scheduler.name=fifo",
    "--set",
    "search.max_concurrent_trials=2",
    "--set",
    "tracking.experiment=resume",
]


@pytest.mark.timeout(600)
def test_killed_search_driver_resumes_without_duplicate_runs(
    mlflow_client, driver_killed_once, ray_2_cpus
):
    job = str(JOBS / "tune_digits_cnn_asha.yaml")

    def finished_trials():
        return [
            r for r in runs_in(mlflow_client, "resume", kind="train") if r.info.status == "FINISHED"
        ]

    # The first driver runs in its own process (and session) so it can be killed outright.
    finished_before = driver_killed_once(job, SETTINGS, finished_trials, timeout_s=300, every_s=0.5)
    assert finished_before, "no trial finished before the deadline"
    assert len(finished_before) < 6, "the search ended before the driver could be killed"
    (parent,) = runs_in(mlflow_client, "resume", kind="tune")
    assert parent.info.status == "RUNNING"  # the dead driver could not close it

    result = CliRunner().invoke(app, ["run", job, *SETTINGS, "--resume"], catch_exceptions=False)
    assert result.exit_code == 0, result.output

    parents = runs_in(mlflow_client, "resume", kind="tune")
    children = runs_in(mlflow_client, "resume", kind="train")
    assert [p.info.run_id for p in parents] == [parent.info.run_id]
    assert parents[0].info.status == "FINISHED"
    assert len(children) == 6
    assert len({c.data.tags["deeprig.trial_id"] for c in children}) == 6
    assert all(c.info.status == "FINISHED" for c in children)
    # A trial that finished before the crash was not trained again.
    done = finished_before[0].info.run_id
    assert len(mlflow_client.get_metric_history(done, "val_accuracy")) == 4


def test_resume_without_an_unfinished_search_is_refused(deeprig_home):
    result = CliRunner().invoke(app, ["run", str(JOBS / "tune_digits_cnn_asha.yaml"), "--resume"])
    assert result.exit_code == 2
    assert "no unfinished search named 'tune-digits-cnn-asha'" in result.output
