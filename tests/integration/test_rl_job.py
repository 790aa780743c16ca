"""`kind: rl` on a real local Ray with real RLlib and Gymnasium."""

from __future__ import annotations

import pytest
from deeprig.cli import app
from mlflow import MlflowClient
from typer.testing import CliRunner

from tests.conftest import JOBS

pytestmark = pytest.mark.usefixtures("ray_2_cpus")


@pytest.mark.timeout(300)
def test_ppo_iterations_are_recorded_and_the_checkpoint_evaluates(deeprig_home):
    result = CliRunner().invoke(
        app,
        [
            "run",
            str(JOBS / "rl_ppo_cartpole.yaml"),
            "--set",
            "stop={iterations: 3}",
            "--set",
            "checkpoint.every_n_iterations=2",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    client = MlflowClient(f"sqlite:///{deeprig_home / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("rl").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["deeprig.kind"] == "rl"
    for key in (
        "episode_return_mean",
        "num_env_steps_sampled_lifetime",
        "iteration_time_s",
        "env_steps_per_s",
        "learner.default_policy.total_loss",
    ):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert steps == [1, 2, 3], key
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    assert artifacts == {"checkpoints/iteration_000002", "checkpoints/iteration_000003"}

    evaluated = CliRunner().invoke(
        app, ["eval", run.info.run_id, "--episodes", "3"], catch_exceptions=False
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert "3 episodes: mean return" in evaluated.output


@pytest.mark.timeout(300)
def test_eval_downloads_the_checkpoint_from_the_run_and_records_a_video(deeprig_home, tmp_path):
    """The checkpoint is not on this machine any more (as for a run on a cluster): eval
    takes the newest one from the run's artifacts, and renders the first episode."""
    import shutil

    from PIL import Image

    result = CliRunner().invoke(
        app,
        ["run", str(JOBS / "rl_ppo_cartpole.yaml"), "--set", "stop={iterations: 2}"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    client = MlflowClient(f"sqlite:///{deeprig_home / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("rl").experiment_id])
    shutil.rmtree(run.data.tags["deeprig.checkpoint_path"])

    video = tmp_path / "cartpole.gif"
    evaluated = CliRunner().invoke(
        app, ["eval", run.info.run_id, "--episodes", "2", "--video", str(video)]
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert "2 episodes: mean return" in evaluated.output
    with Image.open(video) as gif:
        assert gif.n_frames > 5 and gif.size[0] >= 300  # CartPole renders 600x400
