"""An rl job survives what a long run meets: its driver dying (`--resume` continues the
same MLflow run from the latest checkpoint) and an env runner crashing (RLlib replaces it)."""

from __future__ import annotations

import os
import signal
import threading

import pytest
from deeprig.cli import app
from typer.testing import CliRunner

from tests.conftest import (
    JOBS,
    deeprig_home_at,
    embedded_store_client,
    only_run,
    poll_until,
    runs_in,
)

JOB = str(JOBS / "rl_ppo_cartpole.yaml")


@pytest.mark.timeout(300)
def test_killed_rl_driver_resumes_the_same_run_from_its_checkpoint(
    mlflow_client, driver_killed_once, ray_2_cpus
):
    # Killed at its first checkpoint (iteration 2); 12 iterations leave ~10 to kill it in.
    iterations = 12
    settings = [
        "--set",
        f"stop={{iterations: {iterations}}}",
        "--set",
        "checkpoint.every_n_iterations=2",
    ]

    def first_checkpointed_run():
        runs = runs_in(mlflow_client, "rl")
        return next(
            (r for r in runs if mlflow_client.list_artifacts(r.info.run_id, "checkpoints")), None
        )

    # killed once its first checkpoint is recorded
    run = driver_killed_once(JOB, settings, first_checkpointed_run, timeout_s=180, every_s=0.3)
    assert run is not None, "no checkpoint was recorded before the deadline"
    assert mlflow_client.get_run(run.info.run_id).info.status == "RUNNING"  # the driver died

    result = CliRunner().invoke(app, ["run", JOB, *settings, "--resume"], catch_exceptions=False)
    assert result.exit_code == 0, result.output

    runs = runs_in(mlflow_client, "rl")
    assert [r.info.run_id for r in runs] == [run.info.run_id]  # continued, not duplicated
    resumed = mlflow_client.get_run(run.info.run_id)
    assert resumed.info.status == "FINISHED"
    assert int(resumed.data.tags["deeprig.resumed_from_iteration"]) >= 2
    # Every iteration is recorded (those between the checkpoint and the kill twice); a return
    # needs a finished episode, so it is checked on a metric every iteration has.
    steps = {m.step for m in mlflow_client.get_metric_history(run.info.run_id, "iteration_time_s")}
    assert steps == set(range(1, iterations + 1))
    lifetime = mlflow_client.get_metric_history(run.info.run_id, "num_env_steps_sampled_lifetime")
    assert max(m.value for m in lifetime) >= iterations * 1024  # the restored counters went on


@pytest.fixture(scope="module")
def env_runner_crash(tmp_path_factory, ray_2_cpus):
    """15 PPO iterations with one env runner, SIGKILLed once an episode return is recorded:
    (what the rl runner returned or raised, the killed actor's id, Ray's address, a client on the
    job's store)."""
    import ray
    from deeprig.runners import Job, rl
    from deeprig.spec import load_spec
    from ray.util.state import list_actors

    address = ray.get_runtime_context().gcs_address  # this session's Ray, not another one's
    home = tmp_path_factory.mktemp("crash") / "deeprig-home"
    with deeprig_home_at(home):
        spec = load_spec(
            JOBS / "rl_ppo_cartpole.yaml",
            ["env_runners.num_env_runners=1", "stop={iterations: 15}", "tracking.experiment=ft"],
        )
        outcome: dict = {}

        def train() -> None:
            try:
                outcome["result"] = rl.run(spec, Job(spec_text="", spec_path=JOBS / "x.yaml"))
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                outcome["error"] = exc

        client = embedded_store_client(home)  # its tables made before the job's, not meanwhile

        def kill_a_sampling_runner():
            runners = list_actors(
                address=address,
                filters=[("class_name", "=", "SingleAgentEnvRunner"), ("state", "=", "ALIVE")],
            )
            runs = runs_in(client, "ft")
            sampled = runs and client.get_metric_history(runs[0].info.run_id, "episode_return_mean")
            if runners and sampled:
                os.kill(runners[0].pid, signal.SIGKILL)
                return runners[0].actor_id
            return None

        worker = threading.Thread(target=train)
        worker.start()
        killed = poll_until(kill_a_sampling_runner, timeout_s=120, while_=worker.is_alive)
        worker.join(timeout=240)
    assert killed is not None, "the env runner was not seen running"
    return outcome, killed, address, client


@pytest.mark.timeout(300)
def test_a_crashed_env_runner_is_replaced(env_runner_crash):
    from ray.util.state import list_actors

    _, killed, address, _ = env_runner_crash
    # RLlib's env runner actors are restartable: Ray brought the killed one back.
    (runner,) = list_actors(address=address, filters=[("actor_id", "=", killed)], detail=True)
    assert runner.num_restarts >= 1


@pytest.mark.timeout(300)
def test_the_job_finishes_after_its_env_runner_crashed(env_runner_crash):
    outcome, _, _, client = env_runner_crash
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"].iterations == 15
    run = only_run(client, "ft")
    assert run.info.status == "FINISHED"
