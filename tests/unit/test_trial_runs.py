"""The driver's record of a search's trials (tracking/trials.py), against a real MLflow
store: what a trial reports becomes its child run's metrics, Tune's own keys and the
trial's markers do not, and a driver that takes over a search never records a step twice.
Tune's side is left out: the callback is called as Tune calls it, with a trial's id,
values and results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from deeprig.tracking.runs import RunRecorder
from deeprig.tracking.store import embedded_target
from deeprig.tracking.tags import Tag
from deeprig.tracking.trial_reports import TrialReports
from deeprig.tracking.trials import TrialRunsCallback
from mlflow import MlflowClient


@dataclass
class Trial:  # the attributes of Tune's Trial the callback reads
    trial_id: str
    config: dict[str, Any]
    last_result: dict[str, Any] = field(default_factory=dict)
    error: Exception | None = None

    def get_pickled_error(self) -> Exception | None:
        return self.error


def epoch_result(epoch: int, val_loss: float) -> dict[str, Any]:
    # what Tune hands the callback: the trial's report plus Tune's own keys
    return {
        "epoch": epoch,
        "val_loss": val_loss,
        "ended_at": 1_700_000_000.0 + epoch,
        "last_report": 0.0,
        "training_iteration": epoch,
        "time_total_s": 1.5 * epoch,
        "pid": 4242,
        "done": False,
        "trial_id": "t1",
    }


def make_callback(target, parent: RunRecorder, num_epochs: int = 3) -> TrialRunsCallback:
    return TrialRunsCallback(
        target,
        "search",
        parent.run_id,
        lambda values: {"name": "base", "kind": "train", "optim": {"lr": values["optim.lr"]}},
        TrialReports(
            step_of=lambda result, reports: int(result["epoch"]) - 1,
            markers=frozenset({"ended_at", "last_report"}),
            timestamp_key="ended_at",
        ),
        judge=lambda r: (int(r.get("epoch", 0)), int(r.get("epoch", 0)) < num_epochs),
    )


def test_a_trials_reports_become_its_child_runs_metrics(tmp_path):
    target = embedded_target(tmp_path)
    parent = RunRecorder.create(
        target, "search", {"name": "search", "kind": "tune"}, "name: search", tmp_path
    )
    callback = make_callback(target, parent)
    trial = Trial("t1", {"optim.lr": 0.01})
    callback.on_trial_start(0, [trial], trial)
    for epoch, loss in ((1, 0.9), (2, 0.7), (3, 0.6)):
        trial.last_result = epoch_result(epoch, loss)
        callback.on_trial_result(0, [trial], trial, trial.last_result)
    callback.on_trial_complete(0, [trial], trial)

    (child,) = parent.child_runs().values()
    run = MlflowClient(target.uri).get_run(child.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[Tag.TRIAL_ID] == "t1"
    assert run.data.tags["mlflow.parentRunId"] == parent.run_id
    assert run.data.params["optim.lr"] == "0.01"
    assert set(run.data.metrics) == {"epoch", "val_loss", "hp.optim.lr"}
    history = MlflowClient(target.uri).get_metric_history(child.run_id, "val_loss")
    assert [(m.step, m.value) for m in history] == [(0, 0.9), (1, 0.7), (2, 0.6)]
    # stamped when the epoch ended on the worker, not when the driver logged it
    assert [m.timestamp for m in history] == [
        1_700_000_001_000,
        1_700_000_002_000,
        1_700_000_003_000,
    ]


def test_a_new_driver_continues_a_trials_run_without_repeating_steps(tmp_path):
    target = embedded_target(tmp_path)
    parent = RunRecorder.create(
        target, "search", {"name": "search", "kind": "tune"}, "name: search", tmp_path
    )
    trial = Trial("t1", {"optim.lr": 0.01})
    first = make_callback(target, parent, num_epochs=4)
    first.on_trial_start(0, [trial], trial)
    for epoch in (1, 2):
        first.on_trial_result(0, [trial], trial, epoch_result(epoch, 1.0 / epoch))
    first._trials["t1"].sink.flush()  # the first driver dies here: its run stays RUNNING

    second = make_callback(target, parent, num_epochs=4)  # the restored search's driver
    second.on_trial_start(0, [trial], trial)
    # the trial restarts from its epoch-1 checkpoint: epoch 2 comes again, then 3
    for epoch in (2, 3):
        trial.last_result = epoch_result(epoch, 1.0 / epoch)
        second.on_trial_result(0, [trial], trial, trial.last_result)
    second.on_trial_complete(0, [trial], trial)  # 3 of 4 epochs: stopped early

    children = parent.child_runs()
    assert list(children) == ["t1"]  # found again, not duplicated
    run = MlflowClient(target.uri).get_run(children["t1"].run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags[Tag.STOPPED_EARLY] == "true"
    assert run.data.tags[Tag.STOPPED_AT_EPOCH] == "3"
    history = MlflowClient(target.uri).get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in history] == [0, 1, 2]


def test_a_failed_trials_run_is_failed_with_its_class(tmp_path):
    from deeprig.training.guards import NonFiniteLoss
    from ray.train.v2.api.exceptions import ControllerError

    target = embedded_target(tmp_path)
    parent = RunRecorder.create(
        target, "search", {"name": "search", "kind": "tune"}, "name: search", tmp_path
    )
    callback = make_callback(target, parent)
    trial = Trial("t1", {"optim.lr": 9.0}, error=ControllerError(NonFiniteLoss(0, 3)))
    callback.on_trial_start(0, [trial], trial)
    callback.on_trial_error(0, [trial], trial)

    run = MlflowClient(target.uri).get_run(parent.child_runs()["t1"].run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags[Tag.FAILURE] == "non_finite_loss"


def test_the_live_display_names_each_trial_by_its_mlflow_run(tmp_path):
    """Tune's trial ids are nowhere in MLflow: the best so far is named by its run."""
    import io

    from deeprig.progress import SearchProgress
    from rich.console import Console

    target = embedded_target(tmp_path)
    parent = RunRecorder.create(
        target, "search", {"name": "search", "kind": "tune"}, "name: search", tmp_path
    )
    callback = make_callback(target, parent)
    out = io.StringIO()
    callback.progress = SearchProgress(Console(file=out, width=120), 1, "val_loss", "min")
    trial = Trial("t1", {"optim.lr": 0.01})
    with callback.progress:
        callback.on_trial_start(0, [trial], trial)
        trial.last_result = epoch_result(3, 0.6)
        callback.on_trial_result(0, [trial], trial, trial.last_result)
        callback.on_trial_complete(0, [trial], trial)
    (child,) = parent.child_runs().values()
    shown = out.getvalue().splitlines()
    assert any(f"0.6 (run {child.run_id[:8]})" in line for line in shown)
    # it ended under the name it started with: done, none left running
    row = next(line for line in reversed(shown) if "1/1" in line)
    assert [cell.strip() for cell in row.strip("│ ").split("│")][:3] == ["1/1", "0", "1"]
