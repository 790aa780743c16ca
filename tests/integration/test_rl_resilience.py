"""An rl job survives what a long run meets: its driver dying (`--resume` continues the
same MLflow run from the latest checkpoint) and an env runner crashing (RLlib replaces it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from deeprig.cli import app
from mlflow import MlflowClient
from typer.testing import CliRunner

from tests.conftest import JOBS

JOB = str(JOBS / "rl_ppo_cartpole.yaml")


def rl_runs(client: MlflowClient):
    exp = client.get_experiment_by_name("rl")
    return client.search_runs([exp.experiment_id]) if exp else []


@pytest.mark.timeout(300)
def test_killed_rl_driver_resumes_the_same_run_from_its_checkpoint(deeprig_home, ray_2_cpus):
    settings = ["--set", "stop={iterations: 40}", "--set", "checkpoint.every_n_iterations=2"]
    driver = subprocess.Popen(
        [sys.executable, "-m", "deeprig.cli", "run", JOB, *settings],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=dict(os.environ, DEEPRIG_HOME=str(deeprig_home)),
    )
    client = MlflowClient(f"sqlite:///{deeprig_home / 'mlflow.db'}")
    run = None
    deadline = time.time() + 180
    try:  # kill it once its first checkpoint is recorded
        while time.time() < deadline and run is None:
            time.sleep(0.3)
            if not (deeprig_home / "mlflow.db").exists():
                continue
            for candidate in rl_runs(client):
                if client.list_artifacts(candidate.info.run_id, "checkpoints"):
                    run = candidate
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    assert run is not None, "no checkpoint was recorded before the deadline"
    assert client.get_run(run.info.run_id).info.status == "RUNNING"  # the driver died

    result = CliRunner().invoke(app, ["run", JOB, *settings, "--resume"], catch_exceptions=False)
    assert result.exit_code == 0, result.output

    runs = rl_runs(client)
    assert [r.info.run_id for r in runs] == [run.info.run_id]  # continued, not duplicated
    resumed = client.get_run(run.info.run_id)
    assert resumed.info.status == "FINISHED"
    assert int(resumed.data.tags["deeprig.resumed_from_iteration"]) >= 2
    # Every iteration is recorded (those between the checkpoint and the kill twice); a return
    # needs a finished episode, so it is checked on a metric every iteration has.
    steps = {m.step for m in client.get_metric_history(run.info.run_id, "iteration_time_s")}
    assert steps == set(range(1, 41))
    lifetime = client.get_metric_history(run.info.run_id, "num_env_steps_sampled_lifetime")
    assert max(m.value for m in lifetime) >= 40 * 1024  # the restored counters went on


@pytest.mark.timeout(300)
def test_a_crashed_env_runner_is_replaced_and_the_job_finishes(deeprig_home, ray_2_cpus):
    from deeprig.runners.rl import run_rl
    from deeprig.spec import load_spec
    from ray.util.state import list_actors

    spec = load_spec(
        JOBS / "rl_ppo_cartpole.yaml",
        ["env_runners.num_env_runners=1", "stop={iterations: 25}", "tracking.experiment=ft"],
    )
    outcome: dict = {}

    def train() -> None:
        try:
            outcome["result"] = run_rl(spec, spec_text="", spec_path=JOBS / "x.yaml")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    import ray

    address = ray.get_runtime_context().gcs_address  # this session's Ray, not another one's
    worker = threading.Thread(target=train)
    worker.start()
    killed = None
    deadline = time.time() + 120
    while time.time() < deadline and killed is None and worker.is_alive():
        time.sleep(0.5)
        runners = list_actors(
            address=address,
            filters=[("class_name", "=", "SingleAgentEnvRunner"), ("state", "=", "ALIVE")],
        )
        client = MlflowClient(f"sqlite:///{deeprig_home / 'mlflow.db'}")
        runs = rl_runs_named(client, "ft")
        sampled = runs and client.get_metric_history(runs[0].info.run_id, "episode_return_mean")
        if runners and sampled:
            os.kill(runners[0].pid, signal.SIGKILL)
            killed = runners[0].actor_id
    worker.join(timeout=240)
    assert killed is not None, "the env runner was not seen running"
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"].iterations == 25
    (run,) = rl_runs_named(MlflowClient(f"sqlite:///{deeprig_home / 'mlflow.db'}"), "ft")
    assert run.info.status == "FINISHED"
    # RLlib's env runner actors are restartable: Ray brought the killed one back.
    (runner,) = list_actors(address=address, filters=[("actor_id", "=", killed)], detail=True)
    assert runner.num_restarts >= 1


def rl_runs_named(client: MlflowClient, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []
