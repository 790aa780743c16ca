"""A search's trial runs, owned by the driver, as a Ray Tune callback.

The driver opens each trial's child run when Tune starts the trial, logs every result the
trial reports (its metrics and its hyperparameter values, at its epoch or iteration) and
closes the run when Tune ends the trial. Trial actors never touch MLflow: a cold actor
importing mlflow to open its own run cost ~1.4 s of a ~1 s trial on 2 CPUs
(benchmarks/RESULTS.md, figure 5), and Tune stops an early-stopped trial by tearing its
actor down, so a trial could not close its own run anyway.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.result import AUTO_RESULT_KEYS

from deeprig.report_keys import HANDED_BACK
from deeprig.tracking.null import NullRecorder
from deeprig.tracking.runs import RunRecorder, find_child_run
from deeprig.tracking.sink import MlflowMetricsSink, numeric_values
from deeprig.tracking.store import TrackingTarget
from deeprig.tracking.tags import MLFLOW_PARENT_RUN_ID, RunStatus, Tag
from deeprig.tracking.trial_reports import TrialReports

# What Tune adds to every result besides the trial's own metrics.
TUNE_RESULT_KEYS = frozenset(AUTO_RESULT_KEYS) | {"done", "trial_id", "experiment_tag"}


@dataclass
class TrialRecord:
    """One trial's child run and the metric sink onto it."""

    recorder: RunRecorder
    sink: MlflowMetricsSink
    # The newest step the run holds: a restarted trial reports again the epochs after its
    # checkpoint, and a run found again must not get them twice. -1 for a new run.
    recorded_through: int
    reports: int = 0


class TrialRunsCallback(Callback):
    def __init__(
        self,
        target: TrackingTarget | None,
        experiment: str,
        parent_run_id: str | None,
        spec_of: Callable[[dict[str, Any]], dict[str, Any]],
        reports: TrialReports,
        judge: Callable[[dict[str, Any]], tuple[int, bool]],
        progress: Any = None,
    ):
        """`spec_of`: a trial's values -> its spec (recorded as the child run's params);
        `judge`: a completed trial's last result -> (units trained, stopped early)."""
        self.target = target
        self.experiment = experiment
        self.parent_run_id = parent_run_id
        self.spec_of = spec_of
        self.reports = reports
        self.judge = judge
        self.progress = progress
        self._trials: dict[str, TrialRecord] = {}
        self.run_ids: dict[str, str] = {}  # trial id -> its run, of every trial opened here

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment state; the live display and the
        # open runs stay here (a restored search finds its runs again by trial id).
        return self.__dict__ | {"progress": None, "_trials": {}}

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        if self.target is not None and trial.trial_id not in self._trials:
            self._trials[trial.trial_id] = self._open(trial.trial_id, trial.config)
            self.run_ids[trial.trial_id] = self._trials[trial.trial_id].recorder.run_id
        if self.progress:
            self.progress.started(self._shown(trial.trial_id))

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        record = self._trials.get(trial.trial_id)
        if record is not None:
            self._log(record, trial.config, result)
        if self.progress:
            self.progress.result(self._shown(trial.trial_id), result)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        shown = self._shown(trial.trial_id)  # (before its run is closed)
        trained, early = self.judge(trial.last_result or {})
        tags = {Tag.STOPPED_EARLY: str(early).lower(), Tag.EPOCHS_TRAINED: str(trained)}
        if early:
            tags[Tag.STOPPED_AT_EPOCH] = str(trained)
        # The driver's view is the final word: a trial torn down by the scheduler may have
        # raised on its way out, but it was stopped early, not failed.
        self._close(trial.trial_id, RunStatus.KILLED if early else RunStatus.FINISHED, tags)
        if self.progress:
            self.progress.ended(shown, "stopped early" if early else "finished")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        from deeprig.failures import classify

        shown = self._shown(trial.trial_id)  # (before its run is closed)
        tags = {Tag.STOPPED_EARLY: "false"}
        try:  # (Tune keeps the trial's exception pickled; one that cannot be read back
            error = trial.get_pickled_error()  # leaves the run without a class, not open)
        except Exception:
            error = None
        if error is not None:
            tags[Tag.FAILURE] = classify(error).kind.value
        self._close(trial.trial_id, RunStatus.FAILED, tags)
        if self.progress:
            self.progress.ended(shown, "failed")

    def _shown(self, trial_id: str) -> str:
        """How the live display names a trial: by its MLflow run (Tune's trial ids are
        nowhere in MLflow), by the trial id while it has none (tracking off)."""
        record = self._trials.get(trial_id)
        return f"run {record.recorder.run_id[:8]}" if record else trial_id

    def _open(self, trial_id: str, values: dict[str, Any]) -> TrialRecord:
        """The trial's child run: found again when the trial restarts, never duplicated."""
        assert self.target is not None
        existing = find_child_run(self.target, self.experiment, self.parent_run_id, trial_id)
        if existing:
            sink = MlflowMetricsSink(self.target.uri, existing)
            return TrialRecord(RunRecorder(self.target, existing), sink, _newest_step(sink))
        tags = {Tag.TRIAL_ID: trial_id, Tag.TRIAL_VALUES: json.dumps(values)}
        if self.parent_run_id:
            tags |= {
                MLFLOW_PARENT_RUN_ID: self.parent_run_id,
                Tag.PARENT_RUN_ID: self.parent_run_id,
            }
        recorder = RunRecorder.create(
            self.target,
            self.experiment,
            self.spec_of(values),
            json.dumps(values, indent=1),
            Path.cwd(),
            run_name=f"trial-{trial_id}",
            extra_tags=tags,
        )
        return TrialRecord(recorder, MlflowMetricsSink(self.target.uri, recorder.run_id), -1)

    def _log(self, record: TrialRecord, values: dict[str, Any], result: dict[str, Any]) -> None:
        """One report's metrics, and the trial's values as `hp.*` metrics at the same step:
        PBT changes them mid-trial, and MLflow params are write-once."""
        if HANDED_BACK in result:  # (a finished trial's metrics, read back from its run)
            return
        reports = self.reports
        reported = {
            k: v
            for k, v in numeric_values(result).items()
            if k not in TUNE_RESULT_KEYS and k not in reports.markers
        }
        record.reports += 1
        step = reports.step_of(result, record.reports)
        if step <= record.recorded_through or not reported:
            return
        reported |= {f"hp.{k}": v for k, v in numeric_values(values).items()}
        timestamp = result.get(reports.timestamp_key) if reports.timestamp_key else None
        # Asynchronous, one batch in flight: Tune's event loop does not wait on MLflow.
        record.sink.log(reported, step=step, timestamp=timestamp)
        record.recorded_through = step

    def _close(self, trial_id: str, status: RunStatus, tags: dict[str, str]) -> None:
        record = self._trials.pop(trial_id, None)
        if record is None:
            return
        try:
            record.sink.flush()  # every point reported is recorded before the run ends
        finally:
            record.recorder.set_tags(tags)
            record.recorder.finish(status)


def _newest_step(sink: MlflowMetricsSink) -> int:
    """The newest step of any metric the run holds (only searches that are resumed ask)."""
    keys = sink.client.get_run(sink.run_id).data.metrics
    return max((sink.newest_step(k) for k in keys), default=-1)


def finished_trial_metrics(parent: RunRecorder | NullRecorder) -> dict[str, dict[str, float]]:
    """trial id -> final metrics of each trial whose run finished: a restored search hands
    these to Tune instead of training the trial again (the dead driver closed its run, but
    Tune's saved state missed the trial's end)."""
    return {
        trial_id: child.recorder.latest_metrics()
        for trial_id, child in parent.child_runs().items()
        if trial_id and child.status == RunStatus.FINISHED
    }
