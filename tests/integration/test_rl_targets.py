"""The ready rl jobs reach their targets on this 2-CPU machine (slow: `make test-slow`).
The greedy policy is judged by `deeprig eval` over 10 episodes, not by the training
metric alone."""

from __future__ import annotations

import re

import pytest
from deeprig.cli import app
from typer.testing import CliRunner

from tests.conftest import JOBS, only_run

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_2_cpus")]


@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    ("job", "target"),
    [
        ("rl_ppo_cartpole.yaml", 450.0),
        ("rl_dqn_cartpole.yaml", 450.0),
        ("rl_sac_pendulum.yaml", -250.0),
    ],
)
def test_rl_job_reaches_its_return(job, target, mlflow_client):
    result = CliRunner().invoke(app, ["run", str(JOBS / job)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run = only_run(mlflow_client, "rl")
    steps = run.data.metrics["num_env_steps_sampled_lifetime"]
    evaluated = CliRunner().invoke(
        app, ["eval", run.info.run_id, "--episodes", "10"], catch_exceptions=False
    )
    mean_return = float(re.search(r"mean return (-?[\d.]+)", evaluated.output).group(1))
    print(f"{job}: eval mean return {mean_return:.1f} after {steps:.0f} env steps")
    assert mean_return >= target
