"""Driver-side bookkeeping of a search's trial runs, as a Ray Tune callback.

Tune stops an early-stopped trial by tearing its actor down, so the trial cannot close
its own MLflow run: this callback does, from the driver, and feeds the live progress.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ray.tune import Callback

from deeprig.tracking.runs import RunRecorder, find_child_run
from deeprig.tracking.store import TrackingTarget
from deeprig.tracking.tags import RunStatus, Tag


class TrialRunsCallback(Callback):
    def __init__(
        self,
        target: TrackingTarget | None,
        experiment: str,
        parent_run_id: str | None,
        judge: Callable[[dict[str, Any]], tuple[int, bool]],
        progress: Any = None,
    ):
        """`judge`: a completed trial's last result -> (epochs or iterations it trained,
        whether it was stopped early); the search's base kind knows how to tell."""
        self.target = target
        self.experiment = experiment
        self.parent_run_id = parent_run_id
        self.judge = judge
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
        trained, early = self.judge(trial.last_result or {})
        self._close(
            trial.trial_id,
            RunStatus.KILLED if early else RunStatus.FINISHED,
            {Tag.STOPPED_EARLY: str(early).lower(), Tag.EPOCHS_TRAINED: str(trained)},
        )
        if self.progress:
            self.progress.ended(trial.trial_id, "stopped early" if early else "finished")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._close(trial.trial_id, RunStatus.FAILED, {Tag.STOPPED_EARLY: "false"})
        if self.progress:
            self.progress.ended(trial.trial_id, "failed")

    def _close(self, trial_id: str, status: RunStatus, tags: dict[str, str]) -> None:
        if self.target is None:
            return
        run_id = find_child_run(self.target, self.experiment, self.parent_run_id, trial_id)
        if run_id is None:
            return
        recorder = RunRecorder(self.target, run_id)
        recorder.set_tags(tags)
        # The driver's view is the final word: a trial torn down by the scheduler may have
        # raised on its way out, but it was stopped early, not failed.
        recorder.finish(status)
