"""Bad rl specs: exit 2 naming the field, before Ray starts."""

from __future__ import annotations

from deeprig.cli import app
from typer.testing import CliRunner

from tests.conftest import JOBS

PPO = JOBS / "rl_ppo_cartpole.yaml"


def validate(*overrides: str):
    args = ["validate", str(PPO)]
    for override in overrides:
        args += ["--set", override]
    return CliRunner().invoke(app, args)


def test_ppo_job_validates():
    result = validate()
    assert result.exit_code == 0, result.output


def test_unknown_algorithm_is_refused():
    result = validate("algorithm=PPPO")
    assert result.exit_code == 2
    assert "algorithm: must be one of" in result.output and "did you mean 'PPO'" in result.output


def test_unknown_env_id_gets_a_did_you_mean():
    result = validate("env=CartPol-v1")
    assert result.exit_code == 2
    assert "env: unknown Gymnasium env 'CartPol-v1'; did you mean 'CartPole-v1'?" in result.output


def test_a_setting_the_algorithm_does_not_take_is_named():
    result = validate("training.clip_parm=0.2")
    assert result.exit_code == 2
    assert "training.clip_parm: PPO does not take it; did you mean 'clip_param'?" in result.output


def test_dqn_on_a_continuous_env_is_refused():
    result = validate("env=Pendulum-v1", "algorithm=DQN", "training={}")
    assert result.exit_code == 2
    assert "algorithm: DQN needs a discrete action space; Pendulum-v1 has Box" in result.output


def test_a_run_without_a_stop_criterion_is_refused():
    result = validate("stop={episode_return_mean: 100}")
    assert result.exit_code == 2
    assert "give num_env_steps, iterations or seconds" in result.output


def test_an_env_without_a_batched_implementation_cannot_use_it():
    result = validate("env=Acrobot-v1", "env_runners.vectorize=vector_entry_point")
    assert result.exit_code == 2
    assert "env_runners.vectorize: Acrobot-v1 has no vector entry point" in result.output


def test_numpy_scalars_in_rllib_results_are_kept():
    """A vectorised CartPole reports returns as numpy float32: they are metrics too (they
    drive the stop rule)."""
    import numpy as np
    from deeprig.runners.rl import flatten_result

    result = {
        "env_runners": {"episode_return_mean": np.float32(451.5), "num_env_steps_sampled": 1024},
        "num_env_steps_sampled_lifetime": np.int64(4096),
        "time_this_iter_s": 0.5,
        "learners": {"default_policy": {"total_loss": np.float32(0.25)}},
    }
    metrics = flatten_result(result)
    assert metrics["episode_return_mean"] == 451.5
    assert metrics["num_env_steps_sampled_lifetime"] == 4096.0
    assert metrics["learner.default_policy.total_loss"] == 0.25
    assert metrics["env_steps_per_s"] == 2048.0
