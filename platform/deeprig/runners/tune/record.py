"""A finished search, recorded on its parent run: the best trial's value, config, run and
model; counts of trials; a table of every trial's results; a plot of all trials.

All of it comes from what the driver holds — Tune's results, the trial runs the driver
opened — so a search whose tracking server is away at its end closes all the same: its
records wait in the spool, and the best trial's checkpoint stands in for its model, which
is logged through MLflow's own API and needs the server."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deeprig.plots import search_trials
from deeprig.runners.tune.trial import SearchBase, TuneChecked, TuneOutcome
from deeprig.spec.tune import TuneSpec
from deeprig.tracking.key_metric import record_key_metric
from deeprig.tracking.tags import RunStatus, Tag

if TYPE_CHECKING:  # (mlflow's import is ~2 s; `validate` needs none of it)
    from deeprig.failures import JobFailure
    from deeprig.tracking.null import NullRecorder
    from deeprig.tracking.runs import RunRecorder

# What the trials table keeps of each trial's last result, besides its config.
TRIAL_COLUMNS = (
    "trial_id",
    "epoch",
    "train_loss",
    "val_loss",
    "val_accuracy",
    "val_rmse",
    "training_iteration",
    "time_total_s",
    "episode_return_mean",
    "num_env_steps_sampled_lifetime",
)


@dataclass(frozen=True)
class BestTrial:
    """The search's best trial, as Tune's results and the trial runs tell it."""

    result: Any  # its Tune Result
    value: float  # the best of the search's metric over its reports
    trial_id: Any
    run_id: str | None  # its MLflow run, when the driver knows it


def record_search(
    spec: TuneSpec,
    checked: TuneChecked,
    base: SearchBase,
    results: Any,
    parent: RunRecorder | NullRecorder,
    started: float,
    trial_runs: dict[str, str],
) -> TuneOutcome:
    """`trial_runs`: trial id -> its run, of the trials this driver opened (a restored
    search's others are read from the parent's child runs while the server answers)."""
    metric = spec.search.metric
    frames = _trial_frames(results)
    errors = [r.error for r in results if r.error]
    if not any(not r.error and r.metrics and metric in r.metrics for r in results):
        raise _all_trials_failed(errors)
    answers = parent.answers() if parent else False
    best = _best_trial(spec, results, _trial_run_ids(parent, trial_runs, answers))
    stopped = _stopped_early(spec, base, results)
    outcome = TuneOutcome(
        job_name=spec.name,
        experiment=spec.experiment_name,
        metric=metric,
        unit=base.unit,
        parent_run_id=parent.run_id,
        best_run_id=best.run_id,
        best_metric=best.value,
        best_config=dict(best.result.config),
        num_trials=len(results),
        num_stopped_early=len(stopped),
        total_epochs=sum(len(f) for f in frames.values()),
        seconds=time.perf_counter() - started,
        note="" if answers or not parent else _KEPT_LOCALLY,
    )
    if not parent:  # nothing records: no figure drawn, no model exported for nothing
        return outcome
    _log_summary(parent, outcome, best, len(errors))
    _log_trials(parent, spec, base, results, frames, best, stopped)
    if answers:
        base.log_best(parent, spec, checked, best.result)
    else:
        _log_best_checkpoint(parent, best.result)
    parent.finish(RunStatus.FINISHED)
    return outcome


def _trial_frames(results: Any) -> dict[str, Any]:
    """Each trial's reports as a dataframe, by trial id: what the plot draws and the
    total of epochs counts."""
    return {
        r.metrics.get("trial_id", str(i)): r.metrics_dataframe
        for i, r in enumerate(results)
        if r.metrics_dataframe is not None
    }


def _trial_run_ids(
    parent: RunRecorder | NullRecorder, trial_runs: dict[str, str], answers: bool
) -> dict[str, str]:
    """Trial id -> its run: those this driver opened and, while the server answers, the
    parent's child runs (a restored search's trials the dead driver opened)."""
    run_ids = dict(trial_runs)
    if answers:
        run_ids |= {trial: child.run_id for trial, child in parent.child_runs().items() if trial}
    return run_ids


def _best_trial(spec: TuneSpec, results: Any, run_ids: dict[str, str]) -> BestTrial:
    metric, mode = spec.search.metric, spec.search.mode
    best = results.get_best_result(metric=metric, mode=mode, scope="all")
    frame = best.metrics_dataframe
    value = float(frame[metric].min() if mode == "min" else frame[metric].max())
    trial_id = best.metrics.get("trial_id")
    return BestTrial(best, value, trial_id, run_ids.get(str(trial_id)))


def _stopped_early(spec: TuneSpec, base: SearchBase, results: Any) -> set[str]:
    """The trials their base judges stopped early: what the trial runs'
    deeprig.stopped_early says (the same judge of the same result)."""
    return {
        str(r.metrics.get("trial_id"))
        for r in results
        if not r.error and r.metrics and base.judge(spec.base, r.metrics)[1]
    }


def _log_summary(parent: RunRecorder, outcome: TuneOutcome, best: BestTrial, failed: int) -> None:
    """The best trial's value, config and run, and the counts of trials, on the parent
    run: the figures the outcome shows."""
    record_key_metric(parent, outcome.metric, best.value)
    parent.log_metrics(
        {
            "num_trials": outcome.num_trials,
            "num_trials_stopped_early": outcome.num_stopped_early,
            "num_trials_failed": failed,
            "total_epochs": outcome.total_epochs,
        }
    )
    parent.log_params({f"best.{k}": json.dumps(v) for k, v in outcome.best_config.items()})
    parent.set_tags(
        {
            Tag.BEST_TRIAL_ID: str(best.trial_id),
            Tag.BEST_RUN_ID: best.run_id or "",
        }
    )
    if best.run_id:
        parent.set_tags_of(best.run_id, {Tag.BEST_TRIAL: "true"})


def _log_trials(
    parent: RunRecorder,
    spec: TuneSpec,
    base: SearchBase,
    results: Any,
    frames: dict[str, Any],
    best: BestTrial,
    stopped: set[str],
) -> None:
    """Every trial's last results as trials.csv, and all trials' curves as
    plots/search.png."""
    metric = spec.search.metric
    frame = results.get_dataframe(filter_metric=metric, filter_mode=None)
    keep = [c for c in frame.columns if c.startswith("config/") or c in TRIAL_COLUMNS]
    parent.log_csv(frame[keep], "trials.csv")
    best_label = f"run {best.run_id[:8]}" if best.run_id else str(best.trial_id)
    figure = search_trials(frames, metric, best.trial_id, best_label, base.unit, stopped, spec.name)
    parent.log_figure(figure, "plots/search.png")


_KEPT_LOCALLY = (
    "the tracking server did not answer: the search's records wait in the spool, the best "
    "trial's checkpoint logged in place of its model"
)


def _log_best_checkpoint(parent: RunRecorder, best: Any) -> None:
    """The best trial's checkpoint as it is, under checkpoints/best (its outbox copies it)."""
    from pathlib import Path

    if best.checkpoint is not None:
        with best.checkpoint.as_directory() as directory:
            parent.log_directory(Path(directory), "checkpoints/best")
    elif path := best.metrics.get("checkpoint_path"):  # (a TorchTrainer trial's)
        parent.log_directory(Path(path), "checkpoints/best")


def drop_orphan_runs(parent: RunRecorder | NullRecorder, results: Any) -> None:
    """Trials the dead driver started but never saved in Tune's state do not exist for the
    restored search (it ran replacements): their child runs are deleted (MLflow keeps
    them restorable) and listed on the parent, so each trial has exactly one run."""
    known = {r.metrics.get("trial_id") for r in results if r.metrics}
    # Every trial the search knows was closed by TrialRunsCallback; a run still RUNNING
    # now belongs to a trial only the dead driver knew.
    orphans = {
        trial: child
        for trial, child in parent.child_runs().items()
        if trial not in known and child.status == RunStatus.RUNNING
    }
    for child in orphans.values():
        child.recorder.set_tags({Tag.ORPHANED_BY_RESUME: "true"})
        child.recorder.finish(RunStatus.KILLED)
        child.recorder.delete()
    if orphans:
        deleted = ",".join(sorted(c.run_id for c in orphans.values()))
        parent.set_tags({Tag.ORPHAN_RUNS_DELETED: deleted})


def _all_trials_failed(errors: list[BaseException]) -> JobFailure:
    """The search's failure: its trials' errors classified as one job's ranks' are."""
    from deeprig.failures import JobFailure, classify_ranks

    first = classify_ranks(errors)
    detail = f"all {len(errors)} trials failed; the telling error: {first.detail}"
    return JobFailure(first.kind, detail, first.where, first.frames)
