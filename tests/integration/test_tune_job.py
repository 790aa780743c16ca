"""`kind: tune` on a real local Ray: Optuna + ASHA over Train trials, recorded in MLflow as
one parent run with one linked child run per trial. A search whose outcome several tests
check runs once, in a module-scoped fixture."""

from __future__ import annotations

import pytest
from deeprig.cli import app
from typer.testing import CliRunner

from tests.conftest import JOBS, deeprig_home_at, embedded_store_client, runs_in

pytestmark = pytest.mark.usefixtures("ray_2_cpus")


def run_search(tmp_path_factory, name: str, job: str, *settings: str):
    """`deeprig run JOB SETTINGS` in a deeprig home of its own; a client on its store."""
    home = tmp_path_factory.mktemp(name) / "deeprig-home"
    with deeprig_home_at(home):
        result = CliRunner().invoke(
            app, ["run", str(JOBS / job), *settings], catch_exceptions=False
        )
    assert result.exit_code == 0, result.output
    return embedded_store_client(home)


@pytest.fixture(scope="module")
def asha_search(tmp_path_factory, ray_2_cpus):
    """Four ASHA trials of the CNN, the best registered: (client, parent run, child runs)."""
    client = run_search(
        tmp_path_factory,
        "asha",
        "tune_digits_cnn_asha.yaml",
        "--set",
        "search.num_samples=4",
        "--set",
        "base.optim.num_epochs=3",
        "--set",
        "scheduler.grace_period=1",
        "--set",
        "tracking.register_as=digits-cnn-best",
    )
    parents = runs_in(client, "tune-digits", kind="tune")
    children = runs_in(client, "tune-digits", kind="train")
    assert len(parents) == 1 and len(children) == 4
    return client, parents[0], children


@pytest.mark.timeout(400)
def test_search_records_one_parent_run(asha_search):
    client, parent, children = asha_search  # asha_search: one parent, no more
    assert parent.info.status == "FINISHED"

    # The best trial is marked on both sides, and its value is the parent's best metric.
    best = [c for c in children if c.data.tags.get("deeprig.best_trial") == "true"]
    assert len(best) == 1
    assert parent.data.tags["deeprig.best_run_id"] == best[0].info.run_id
    best_history = client.get_metric_history(best[0].info.run_id, "val_accuracy")
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(
        max(m.value for m in best_history)
    )
    assert parent.data.tags["deeprig.key_metric"] == "best_val_accuracy"  # what `runs` shows
    assert "best.optim.lr" in parent.data.params
    assert parent.data.metrics["num_trials_stopped_early"] == sum(
        c.data.tags["deeprig.stopped_early"] == "true" for c in children
    )

    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    artifacts |= {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"trials.csv", "plots/search.png", "spec"} <= artifacts
    versions = client.search_model_versions("name='digits-cnn-best'")
    assert [v.run_id for v in versions] == [parent.info.run_id]


@pytest.mark.timeout(400)
def test_search_records_a_linked_child_run_per_trial(asha_search):
    client, parent, children = asha_search  # asha_search: one child per trial (4)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert len({c.data.tags["deeprig.trial_id"] for c in children}) == 4

    # Trials end FINISHED, or KILLED with the stopped-early tag: never left RUNNING.
    for child in children:
        stopped = child.data.tags["deeprig.stopped_early"] == "true"
        assert child.info.status == ("KILLED" if stopped else "FINISHED")
        epochs = len(client.get_metric_history(child.info.run_id, "val_accuracy"))
        assert epochs == int(child.data.tags["deeprig.epochs_trained"])
        assert (epochs < 3) == stopped
        assert "optim.lr" in child.data.params  # the trial's own values


@pytest.fixture(scope="module")
def pbt_search(tmp_path_factory, ray_2_cpus):
    """PBT over four MLP trials of 6 epochs: (its trial runs, each one's optim.lr by epoch)."""
    client = run_search(
        tmp_path_factory, "pbt", "tune_digits_mlp_pbt.yaml", "--set", "base.optim.num_epochs=6"
    )
    children = runs_in(client, "tune-digits", kind="train")
    # Hyperparameters are logged as metrics at every epoch (params are write-once): a
    # trial that PBT restarted from another's checkpoint shows a second value.
    return children, [client.get_metric_history(c.info.run_id, "hp.optim.lr") for c in children]


@pytest.mark.timeout(400)
def test_pbt_logs_the_hyperparameters_of_every_trial(pbt_search):
    children, histories = pbt_search
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    # one point an epoch trained, none twice (an exploited trial trains its epochs again
    # from the copied checkpoint: each step is recorded once)
    for history in histories:
        steps = [m.step for m in history]
        assert steps and len(steps) == len(set(steps)) and max(steps) == 5


@pytest.mark.timeout(400)
def test_pbt_copies_weights_into_a_trial_with_changed_hyperparameters(pbt_search):
    _, histories = pbt_search
    assert any(len({m.value for m in h}) > 1 for h in histories), "PBT never exploited a trial"


@pytest.fixture(scope="module")
def rl_search(tmp_path_factory, ray_2_cpus):
    """PPO's lr and entropy coefficient, two trials of three iterations each with ASHA on
    episode_return_mean: (client, parent run, child runs)."""
    client = run_search(
        tmp_path_factory,
        "rl-search",
        "tune_rl_ppo_cartpole.yaml",
        "--set",
        "search.num_samples=2",
        "--set",
        "base.stop={iterations: 3}",
        "--set",
        "scheduler.grace_period=1",
    )
    (parent,) = runs_in(client, "rl-search", kind="tune")
    return client, parent, runs_in(client, "rl-search", kind="rl")


@pytest.mark.timeout(300)
def test_search_over_an_rl_base_records_its_trials(rl_search):
    client, parent, children = rl_search
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


@pytest.mark.timeout(300)
def test_search_over_an_rl_base_records_the_best_checkpoint(rl_search):
    """The best trial's RLlib checkpoint lands on the parent run."""
    client, parent, _ = rl_search
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "checkpoints")}
    assert "checkpoints/best" in artifacts
