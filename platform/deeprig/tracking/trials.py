"""Driver-side bookkeeping of a search's trial runs, as a Ray Tune callback.

Tune stops an early-stopped trial by tearing its actor down, so the trial cannot close
its own MLflow run: this callback does, from the driver, and feeds the live progress.
"""

from __future__ import annotations

from typing import Any

from ray.tune import Callback

from deeprig.tracking.runs import find_child_run
from deeprig.tracking.store import TrackingTarget


class TrialRunsCallback(Callback):
    def __init__(
        self,
        target: TrackingTarget | None,
        experiment: str,
        parent_run_id: str | None,
        num_epochs: int | None,
        progress: Any = None,
    ):
        self.target = target
        self.experiment = experiment
        self.parent_run_id = parent_run_id
        self.num_epochs = num_epochs
        self.progress = progress

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment state; the live display stays here.
        return {k: v for k, v in self.__dict__.items() if k != "progress"} | {"progress": None}

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if self.progress:
            self.progress.result(trial.trial_id, result)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        if self.progress:
            self.progress.started(trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        result = trial.last_result or {}
        if self.num_epochs is None:  # rl: the trial says when it met its stop criteria
            epochs = int(result.get("training_iteration", 0))
            early = not result.get("completed")
        else:
            epochs = int(result.get("epoch", 0))
            early = epochs < self.num_epochs
        self._close(
            trial.trial_id,
            "KILLED" if early else "FINISHED",
            {
                "deeprig.stopped_early": str(early).lower(),
                "deeprig.epochs_trained": str(epochs),
            },
        )
        if self.progress:
            self.progress.ended(trial.trial_id, "stopped early" if early else "finished")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._close(trial.trial_id, "FAILED", {"deeprig.stopped_early": "false"})
        if self.progress:
            self.progress.ended(trial.trial_id, "failed")

    def _close(self, trial_id: str, status: str, tags: dict[str, str]) -> None:
        if self.target is None:
            return
        from mlflow import MlflowClient

        run_id = find_child_run(self.target, self.experiment, self.parent_run_id, trial_id)
        if run_id is None:
            return
        client = MlflowClient(self.target.uri)
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
        # The driver's view is the final word: a trial torn down by the scheduler may have
        # raised on its way out, but it was stopped early, not failed.
        client.set_terminated(run_id, status=status)
