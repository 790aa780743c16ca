"""The tune runner: `check` and `run` of the runner contract (runners/contract.py)."""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

from deeprig.cluster.resources import ClusterResources
from deeprig.runners.contract import Job, JobRun, run_job
from deeprig.runners.tune.record import drop_orphan_runs, record_search
from deeprig.runners.tune.trial import SearchBase, TrialContext, TuneChecked, TuneOutcome
from deeprig.spec.train import TrainSpec
from deeprig.spec.tune import TuneSpec, apply_overrides

# What `--resume` continues: the newest unfinished search of this name.
RESUMES = "search"


def search_base(spec: TuneSpec) -> SearchBase:
    """What the search does with its base spec: its kind's row says."""
    from deeprig.runners import RUNNERS  # (the table holds this module's runner)

    base = RUNNERS[spec.base.kind].search_base
    assert base is not None, "spec/tune.py's base union admits only kinds with a search base"
    return base


def check(spec: TuneSpec, resources: ClusterResources) -> TuneChecked:
    """The base's checks (data, shapes, resources) plus the search's own."""
    return search_base(spec).check(spec, resources)


def run(spec: TuneSpec, job: Job) -> TuneOutcome:
    """Run a search to the end; with `job.resume`, continue the latest unfinished search of
    this name (its Tune state and its MLflow parent run) instead of starting one."""
    return run_job(spec, job, check, _search, resumes=RESUMES)


def _search(job_run: JobRun[TuneSpec, TuneChecked]) -> TuneOutcome:
    from ray import tune

    from deeprig.progress import SearchProgress
    from deeprig.runners.tune.tuner import build_tuner, restore_tuner
    from deeprig.tracking.store import checkpoint_storage
    from deeprig.tracking.trials import TrialRunsCallback, finished_trial_metrics

    spec, checked, parent, job = job_run.spec, job_run.checked, job_run.recorder, job_run.job
    base = search_base(spec)
    started = time.perf_counter()
    parent_id = parent.run_id
    name = f"{spec.name}-{parent_id[:8]}" if parent_id else f"{spec.name}-{int(time.time())}"
    from deeprig.runners import RUNNERS

    kept = RUNNERS[spec.kind].storage(spec)  # (an rl base's: none, the home folder's)
    storage = f"{checkpoint_storage(kept.setting if kept else None, job.home)}/tune"
    if "://" not in storage:
        Path(storage).mkdir(parents=True, exist_ok=True)
    ctx = TrialContext(
        base=spec.base,
        checked=checked.trial,
        storage=f"{storage}/{name}/train",
        in_trial=base.in_trial(spec.base),
        finished=finished_trial_metrics(parent) if job_run.resumed else {},
    )
    job.console.print(
        f"Searching {len(spec.search_space)} hyperparameter(s) of {spec.base.name}: "
        f"{checked.num_trials} trials, {checked.concurrency} at a time, "
        f"{spec.search.algorithm} search, {spec.scheduler.name} scheduler, "
        f"{_per_trial(checked)} per trial"
    )
    progress = SearchProgress(job.console, checked.num_trials, spec.search.metric, spec.search.mode)
    callback = TrialRunsCallback(
        job_run.target,
        spec.experiment_name,
        parent_id,
        functools.partial(_trial_spec, spec.base),
        base.reports,
        functools.partial(base.judge, spec.base),
        progress,
    )
    trainable: Any = tune.with_resources(
        functools.partial(base.trial, ctx=ctx), checked.trial_resources
    )
    if job_run.resumed:
        tuner = restore_tuner(f"{storage}/{name}", trainable, callback)
    else:
        tuner = build_tuner(
            spec,
            trainable,
            checked.concurrency,
            base.max_iterations(spec.base),
            reuse_actors=ctx.in_trial,
            name=name,
            storage=storage,
            callbacks=[callback],
        )
    with progress:
        results = tuner.fit()
    if job_run.resumed:
        drop_orphan_runs(parent, results)
    return record_search(spec, checked, base, results, parent, started, callback.run_ids)


def _trial_spec(base: Any, values: dict[str, Any]) -> dict[str, Any]:
    """The base spec with a trial's values, as the trial trains it (its run's params)."""
    return (
        type(base)
        .model_validate(apply_overrides(base.model_dump(mode="json"), values))
        .model_dump(mode="json")
    )


def _per_trial(checked: TuneChecked) -> str:
    base = checked.spec.base
    if not isinstance(base, TrainSpec) or checked.trial is None:
        # An rl trial: its own process and its env runners.
        return f"{checked.base_summary}, {checked.trial_resources['CPU']:g} CPU"
    workers = base.scaling.described()
    return f"{workers} worker(s) x {checked.trial.budget.cpus_per_worker:g} CPU"
