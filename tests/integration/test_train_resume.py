"""A long train job survives any single failure on a real local Ray: its driver SIGKILLed
(then `runs --close-stale`, then `--resume`), or a worker dying inside an epoch (an
exact resume from a mid-epoch checkpoint), without losing or duplicating a record."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from deeprig.cli import app
from deeprig.training.state import TrainState
from typer.testing import CliRunner

from tests.conftest import JOBS, only_run, runs_in
from tests.integration.conftest import run_in_fresh_home

pytestmark = pytest.mark.usefixtures("ray_2_cpus")

# One worker on digits at batch 64: 23 optimiser steps an epoch.
ONE_WORKER = [
    "--set",
    "scaling.num_workers=1",
    "--set",
    "optim={name: adamw, lr: 0.003, batch_size: 64, num_epochs: 3}",
    "--set",
    "checkpoint={metric: epoch, mode: max, every_n_steps: 5, num_to_keep: 1}",
    "--set",
    "failure.max_failures=1",
    "--set",
    "tracking.log_every_n_steps=1",
]


def test_a_killed_driver_is_closed_then_resumed_in_the_same_run(
    deeprig_home: Path, mlflow_client, driver_killed_once
):
    epochs = 8  # of ~0.5 s: the driver dies well before the end (after epoch 3)
    settings = [
        "--set",
        f"optim.num_epochs={epochs}",
        "--set",
        "optim.batch_size=8",
        "--set",
        "tracking.experiment=resume",
    ]

    def three_epochs_logged():
        runs = runs_in(mlflow_client, "resume")
        return runs[0] if runs and runs[0].data.metrics.get("epoch", 0) >= 3 else None

    killed = driver_killed_once(
        str(JOBS / "digits_mlp.yaml"), settings, three_epochs_logged, timeout_s=240, every_s=0.5
    )
    assert killed is not None, "the driver never reached epoch 3"
    assert mlflow_client.get_run(killed.info.run_id).info.status == "RUNNING"  # left behind

    closed = CliRunner().invoke(app, ["runs", "--close-stale"], env={"COLUMNS": "80"})
    assert closed.exit_code == 0, closed.output
    assert killed.info.run_id in closed.output and "is gone" in closed.output
    stale = mlflow_client.get_run(killed.info.run_id)
    assert stale.info.status == "FAILED"
    assert stale.data.tags["deeprig.failure"] == "driver_lost"

    result = CliRunner().invoke(
        app, ["run", str(JOBS / "digits_mlp.yaml"), *settings, "--resume"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert f"Resuming MLflow run {killed.info.run_id}" in " ".join(result.output.split())
    run = only_run(mlflow_client, "resume")  # the same run: none created
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    resumed_from = int(run.data.tags["deeprig.resumed_from_epoch"])
    assert 2 <= resumed_from < epochs
    for key in ("epoch", "val_accuracy", "train_loss"):
        steps = [m.step for m in mlflow_client.get_metric_history(run.info.run_id, key)]
        assert sorted(steps) == list(range(epochs)), key  # every epoch exactly once


def test_resume_with_nothing_to_resume_exits_2(deeprig_home: Path):
    result = CliRunner().invoke(
        app,
        ["run", str(JOBS / "quickstart.yaml"), "--set", "tracking.experiment=none", "--resume"],
    )
    assert result.exit_code == 2, result.output
    assert "no unfinished train run named 'quickstart' to resume" in " ".join(result.output.split())


CRASHING_NET = '''
    """An MLP that kills its worker process once, at its Nth training forward pass:
    a worker dying inside an epoch, as an OOM kill would. It stalls for the 4 steps
    before: Ray Train's controller registers a report at its next poll of the workers
    (every 2 s, later on a loaded machine), and a worker that dies sooner restarts from
    the checkpoint before. 6 s is three polls."""
    import os
    import time
    from pathlib import Path

    from torch import nn


    class DiesOnce(nn.Module):
        def __init__(self, input_shape, num_outputs, die_at: int = 0, marker: str = ""):
            super().__init__()
            width = 1
            for n in input_shape:
                width *= n
            self.net = nn.Sequential(
                nn.Flatten(), nn.Linear(width, 64), nn.ReLU(), nn.Dropout(0.2),
                nn.Linear(64, num_outputs),
            )
            self.die_at, self.marker, self.calls = die_at, marker, 0

        def forward(self, x):
            if self.training and self.marker:
                self.calls += 1
                dying = not Path(self.marker).exists()
                if dying and self.die_at - 5 < self.calls < self.die_at:
                    time.sleep(1.5)
                if self.calls == self.die_at and dying:
                    Path(self.marker).touch()
                    os._exit(1)
            return self.net(x)
'''


def _dies_once_job(tmp_path: Path, die_at: int, marker: Path) -> list[str]:
    (tmp_path / "nets").mkdir()
    (tmp_path / "nets" / "dies_once.py").write_text(textwrap.dedent(CRASHING_NET))
    return [
        str(JOBS / "quickstart.yaml"),
        "--set",
        f"code.paths=[{tmp_path / 'nets'}]",
        "--set",
        "model={name: custom, target: 'dies_once:DiesOnce', "
        f"args: {{die_at: {die_at}, marker: '{marker}'}}}}",
        *ONE_WORKER,
    ]


def _interrupted_and_straight(tmp_path_factory, *settings: str) -> dict:
    outcomes = {}
    for name, die_at in (("straight", 0), ("interrupted", 30)):
        folder = tmp_path_factory.mktemp(f"{name}-code")
        marker = folder / "died"
        result, client = run_in_fresh_home(
            tmp_path_factory, name, *_dies_once_job(folder, die_at, marker), *settings
        )
        assert result.exit_code == 0, result.output
        assert marker.exists() == (die_at > 0)  # the worker did die
        run = only_run(client, "quickstart")
        state = TrainState.load(run.data.tags["deeprig.checkpoint_path"])
        outcomes[name] = (client, run, state)
    return outcomes


@pytest.mark.slow
def test_two_workers_resumed_mid_epoch_end_where_they_would_have(tmp_path_factory, ray_2_cpus):
    """The same on 2 DDP workers (rank 0 or 1 dies: whichever reaches the 30th step
    first; both restart from the step checkpoint)."""
    runs = _interrupted_and_straight(tmp_path_factory, "--set", "scaling.num_workers=2")
    _, interrupted, resumed = runs["interrupted"]
    _, _, straight = runs["straight"]
    assert "deeprig.resumed_from_step" in interrupted.data.tags
    for key, weights in straight.model.items():
        torch.testing.assert_close(resumed.model[key], weights, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def interrupted_and_straight(tmp_path_factory, ray_2_cpus):
    """The same seeded job twice on one worker: once straight through, once with its worker
    killed at the 30th step (epoch 2, a step checkpoint 5 steps before), restarted by Ray
    Train. (each one's client, run and final TrainState)"""
    return _interrupted_and_straight(tmp_path_factory)


def test_a_worker_killed_mid_epoch_resumes_from_its_step_checkpoint(interrupted_and_straight):
    client, run, _ = interrupted_and_straight["interrupted"]
    assert run.info.status == "FINISHED"
    assert run.data.tags["deeprig.resumed_from_epoch"] == "1"  # inside epoch 2
    assert run.data.tags["deeprig.resumed_from_step"] == "25"
    epochs = [m.step for m in client.get_metric_history(run.info.run_id, "epoch")]
    assert sorted(epochs) == [0, 1, 2]
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "step/train_loss"))
    assert steps == list(range(1, 3 * 23 + 1))  # every optimiser step once, none twice


def test_the_resumed_run_ends_bitwise_where_the_straight_one_does(interrupted_and_straight):
    _, _, straight = interrupted_and_straight["straight"]
    _, _, resumed = interrupted_and_straight["interrupted"]
    assert straight.global_step == resumed.global_step == 3 * 23
    assert straight.model.keys() == resumed.model.keys()
    for key, weights in straight.model.items():
        assert torch.equal(weights, resumed.model[key]), key
    # (rates are measured on the wall clock; model_flops_per_s_per_worker too)
    timing = ("epoch_time_s", "samples_per_s", "tokens_per_s", "model_flops_per_s", "mfu")
    for key, value in straight.metrics.items():
        # (the process's memory high-water mark is the machine's, not the training's)
        if not key.startswith(timing) and not key.startswith("memory.peak_bytes"):
            assert resumed.metrics[key] == value, key


def test_the_same_losses_are_recorded_step_by_step(interrupted_and_straight):
    def losses(name):
        client, run, _ = interrupted_and_straight[name]
        history = client.get_metric_history(run.info.run_id, "step/train_loss")
        return [m.value for m in sorted(history, key=lambda m: m.step)]

    assert losses("interrupted") == losses("straight")


def test_step_metrics_and_the_effective_batch_are_recorded(interrupted_and_straight):
    client, run, _ = interrupted_and_straight["straight"]
    assert run.data.params["effective_batch_size"] == "64"  # 1 step x 64 rows x 1 worker
    for key in ("step/lr", "step/epoch", "step/in_epoch", "step/per_epoch"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 3 * 23, key
    assert run.data.metrics["step/per_epoch"] == 23


FSDP = ["--set", "scaling.num_workers=2", "--set", "scaling.strategy=fsdp"]


@pytest.fixture(scope="module")
def fsdp_interrupted(tmp_path_factory, ray_2_cpus):
    """A 2-worker fsdp job whose worker dies at its 30th step: restarted by Ray Train from
    the sharded step checkpoint both ranks wrote, in the background (checkpoint.async_save;
    the slow test below writes them in the step). (its client, run and final TrainState)"""
    folder = tmp_path_factory.mktemp("fsdp-code")
    marker = folder / "died"
    background = ["--set", "checkpoint.async_save=true"]
    result, client = run_in_fresh_home(
        tmp_path_factory, "fsdp", *_dies_once_job(folder, 30, marker), *FSDP, *background
    )
    assert result.exit_code == 0, result.output
    assert marker.exists()
    run = only_run(client, "quickstart")
    return client, run, TrainState.load(run.data.tags["deeprig.checkpoint_path"])


def test_each_fsdp_worker_holds_half_the_parameters(fsdp_interrupted):
    _, run, _ = fsdp_interrupted
    total = run.data.metrics["model.parameters"]
    for rank in (0, 1):
        held = run.data.metrics[f"memory.params_held.rank{rank}"]
        assert abs(held - total / 2) <= 0.01 * total, (rank, held, total)
        assert run.data.metrics[f"memory.peak_bytes.rank{rank}"] > 0


def test_a_killed_fsdp_worker_resumes_from_the_sharded_step_checkpoint(fsdp_interrupted):
    client, run, state = fsdp_interrupted
    assert run.info.status == "FINISHED"
    assert "deeprig.resumed_from_step" in run.data.tags
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "step/train_loss"))
    assert steps == sorted(set(steps)) and steps[-1] == state.global_step  # none twice
    assert state.sharded  # the checkpoint is every rank's shards, read whole below


def test_the_fsdp_runs_model_is_logged_whole_behind_its_preprocessing(fsdp_interrupted):
    import mlflow
    import numpy as np
    from deeprig.runners.train_record import servable_model

    client, run, state = fsdp_interrupted
    mlflow.set_tracking_uri(client.tracking_uri)
    logged = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model")
    expected_model, _, _ = servable_model(state.whole())
    sample = torch.from_numpy(np.random.default_rng(0).random((4, *state.input_shape), np.float32))
    with torch.no_grad():
        torch.testing.assert_close(logged(sample), expected_model.eval()(sample))
    assert (Path(run.data.tags["deeprig.checkpoint_path"]) / "shards" / ".metadata").exists()


@pytest.mark.slow
def test_two_fsdp_workers_resumed_mid_epoch_end_where_they_would_have(tmp_path_factory, ray_2_cpus):
    """The 2-worker fsdp job straight through and killed at its 30th step end at the same
    weights: a sharded step checkpoint resumes exactly."""
    runs = _interrupted_and_straight(tmp_path_factory, *FSDP)
    resumed, straight = runs["interrupted"][2].whole(), runs["straight"][2].whole()
    assert "deeprig.resumed_from_step" in runs["interrupted"][1].data.tags
    for key, weights in straight.model.items():
        torch.testing.assert_close(resumed.model[key], weights, rtol=1e-5, atol=1e-6)
