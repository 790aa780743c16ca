"""`kind: rl` on a real local Ray with real RLlib and Gymnasium. Each job runs once, in a
module-scoped fixture; the tests check one thing each about what it did."""

from __future__ import annotations

import pytest
from deeprig.cli import app
from typer.testing import CliRunner

from tests.conftest import JOBS, deeprig_home_at, embedded_store_client, only_run

pytestmark = pytest.mark.usefixtures("ray_2_cpus")


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory, ray_2_cpus):
    """Three PPO iterations checkpointed every second one: (its deeprig home, a client on
    its store, its run)."""
    home = tmp_path_factory.mktemp("ppo") / "deeprig-home"
    with deeprig_home_at(home):
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
    client = embedded_store_client(home)
    return home, client, only_run(client, "rl")


@pytest.mark.timeout(300)
def test_ppo_iterations_are_recorded(ppo_run):
    _, client, run = ppo_run
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
    # The key metric `runs` shows: the return at the last checkpoint, the one eval restores.
    returns = client.get_metric_history(run.info.run_id, "episode_return_mean")
    assert run.data.tags["deeprig.key_metric"] == "last_episode_return_mean"
    assert run.data.metrics["last_episode_return_mean"] == max(returns, key=lambda m: m.step).value


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, ppo_run):
    """`deeprig eval` of the PPO run twice: with its checkpoint on this machine, then with
    the checkpoint folder gone (as for a run on a cluster) and `--video`: (the first
    result, the second, the video it was asked for)."""
    import shutil

    home, _, run = ppo_run
    video = tmp_path_factory.mktemp("eval-remote") / "cartpole.gif"
    with deeprig_home_at(home):
        local = CliRunner().invoke(
            app, ["eval", run.info.run_id, "--episodes", "3"], catch_exceptions=False
        )
        shutil.rmtree(run.data.tags["deeprig.checkpoint_path"])
        remote = CliRunner().invoke(
            app, ["eval", run.info.run_id, "--episodes", "2", "--video", str(video)]
        )
    return local, remote, video


@pytest.mark.timeout(300)
def test_ppo_checkpoint_evaluates(evaluated):
    local, _, _ = evaluated
    assert local.exit_code == 0, local.output
    assert "3 episodes: mean return" in local.output


@pytest.mark.timeout(300)
def test_eval_downloads_the_checkpoint_from_the_run(evaluated):
    """eval takes the newest checkpoint from the run's artifacts."""
    _, remote, _ = evaluated
    assert remote.exit_code == 0, remote.output
    assert "2 episodes: mean return" in remote.output


@pytest.mark.timeout(300)
def test_eval_records_a_video(evaluated):
    """...and renders the first episode."""
    from PIL import Image

    _, _, video = evaluated
    with Image.open(video) as gif:
        assert gif.n_frames > 5 and gif.size[0] >= 300  # CartPole renders 600x400
