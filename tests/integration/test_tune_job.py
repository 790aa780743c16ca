"""`kind: tune` on a real local Ray: Optuna + ASHA over Train trials, recorded in MLflow as
one parent run with one linked child run per trial."""

from __future__ import annotations

import pytest
from deeprig.cli import app
from mlflow import MlflowClient
from typer.testing import CliRunner

from tests.conftest import JOBS

pytestmark = pytest.mark.usefixtures("ray_2_cpus")


@pytest.mark.timeout(400)
def test_search_records_one_parent_and_a_linked_child_per_trial(deeprig_home):
    result = CliRunner().invoke(
        app,
        [
            "run",
            str(JOBS / "tune_digits_cnn_asha.yaml"),
            "--set",
            "search.num_samples=4",
            "--set",
            "base.optim.num_epochs=3",
            "--set",
            "scheduler.grace_period=1",
            "--set",
            "tracking.register_as=digits-cnn-best",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output

    client = MlflowClient(f"sqlite:///{deeprig_home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tune-digits")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("deeprig.kind") == "tune"]
    children = [r for r in runs if r.data.tags.get("deeprig.kind") == "train"]
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert len({c.data.tags["deeprig.trial_id"] for c in children}) == 4

    # The best trial is marked on both sides, and its value is the parent's best metric.
    best = [c for c in children if c.data.tags.get("deeprig.best_trial") == "true"]
    assert len(best) == 1
    assert parent.data.tags["deeprig.best_run_id"] == best[0].info.run_id
    best_history = client.get_metric_history(best[0].info.run_id, "val_accuracy")
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(
        max(m.value for m in best_history)
    )
    assert "best.optim.lr" in parent.data.params

    # Trials end FINISHED, or KILLED with the stopped-early tag: never left RUNNING.
    for child in children:
        stopped = child.data.tags["deeprig.stopped_early"] == "true"
        assert child.info.status == ("KILLED" if stopped else "FINISHED")
        epochs = len(client.get_metric_history(child.info.run_id, "val_accuracy"))
        assert epochs == int(child.data.tags["deeprig.epochs_trained"])
        assert (epochs < 3) == stopped
        assert "optim.lr" in child.data.params  # the trial's own values
    assert parent.data.metrics["num_trials_stopped_early"] == sum(
        c.data.tags["deeprig.stopped_early"] == "true" for c in children
    )

    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    artifacts |= {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"trials.csv", "plots/search.png", "spec"} <= artifacts
    versions = client.search_model_versions("name='digits-cnn-best'")
    assert [v.run_id for v in versions] == [parent.info.run_id]


@pytest.mark.timeout(400)
def test_multi_worker_trials_run_as_torch_trainers(deeprig_home):
    """A 2-worker base: each trial is a 2-worker TorchTrainer reporting to Tune."""
    result = CliRunner().invoke(
        app,
        [
            "run",
            str(JOBS / "tune_digits_mlp_random.yaml"),
            "--set",
            "search.num_samples=2",
            "--set",
            "base.optim.num_epochs=2",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    client = MlflowClient(f"sqlite:///{deeprig_home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tune-digits")
    children = [
        r
        for r in client.search_runs([exp.experiment_id])
        if r.data.tags.get("deeprig.kind") == "train"
    ]
    assert len(children) == 2
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.params["scaling.num_workers"] == "2"
        assert len(client.get_metric_history(child.info.run_id, "val_accuracy")) == 2


@pytest.mark.timeout(400)
def test_pbt_copies_weights_and_logs_changing_hyperparameters(deeprig_home):
    result = CliRunner().invoke(
        app,
        [
            "run",
            str(JOBS / "tune_digits_mlp_pbt.yaml"),
            "--set",
            "base.optim.num_epochs=6",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    client = MlflowClient(f"sqlite:///{deeprig_home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tune-digits")
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if r.data.tags.get("deeprig.kind") == "train"]
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    # Hyperparameters are logged as metrics by epoch (params are write-once): a trial
    # that PBT restarted from another's checkpoint shows a second value.
    histories = [client.get_metric_history(c.info.run_id, "hp.optim.lr") for c in children]
    assert all(h for h in histories)
    assert any(len(h) > 1 for h in histories), "PBT never exploited a trial"


@pytest.mark.timeout(300)
def test_search_over_an_rl_base_records_trials_and_the_best_checkpoint(deeprig_home):
    """PPO's lr and entropy coefficient, two trials of three iterations each with ASHA on
    episode_return_mean; the best trial's RLlib checkpoint lands on the parent run."""
    result = CliRunner().invoke(
        app,
        [
            "run",
            str(JOBS / "tune_rl_ppo_cartpole.yaml"),
            "--set",
            "search.num_samples=2",
            "--set",
            "base.stop={iterations: 3}",
            "--set",
            "scheduler.grace_period=1",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output

    client = MlflowClient(f"sqlite:///{deeprig_home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("rl-search")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("deeprig.kind") == "tune"]
    children = [r for r in runs if r.data.tags.get("deeprig.kind") == "rl"]
    assert len(children) == 2
    assert parent.info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    returns = []
    for child in children:
        history = client.get_metric_history(child.info.run_id, "episode_return_mean")
        assert 1 <= len(history) <= 3
        assert child.info.status in ("FINISHED", "KILLED")
        returns += [m.value for m in history]
    assert parent.data.metrics["best_episode_return_mean"] == pytest.approx(max(returns))
    assert {"best.training.lr", "best.training.entropy_coeff"} <= set(parent.data.params)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "checkpoints")}
    assert "checkpoints/best" in artifacts
