"""`kind: tune`: a TuneSpec -> Ray Tune search whose trials reuse the train kind.

Each trial is a Tune function trainable running the base spec with its values:
- a multi-worker base builds the same TorchTrainer the train runner builds (Train V2's way
  of running under Tune: `TuneReportCallback` forwards each epoch's report to Tune, so
  ASHA and median stopping act per epoch);
- a single-worker base runs the same training loop inside the trial itself (no worker
  group per trial, actors reused, checkpoints reported to Tune, which PBT needs).
MLflow: one parent run per search, one child run per trial (`mlflow.parentRunId`), the
best trial marked on the parent and its model logged there.

Early-stopped trials end KILLED with the tag `deeprig.stopped_early=true` (MLflow has no
"stopped" status; KILLED is the one that says "did not run to the end", and the tag tells
it apart from a user's Ctrl-C).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from deeprig.cluster.preflight import check_connected_cluster, storage_setting
from deeprig.cluster.resources import (
    ClusterResources,
    WorkerBudget,
    connected_resources,
    data_reserve,
    local_resources,
)
from deeprig.cluster.session import ray_session
from deeprig.runners.job_runs import find_unfinished_run, open_job_run
from deeprig.runners.train import TrainChecks, build_trainer, check_train_spec, reported_metrics
from deeprig.spec.errors import Problem, SpecError
from deeprig.spec.models import TrainSpec
from deeprig.spec.rl import RLSpec
from deeprig.spec.tune import Domain, TuneSpec, apply_overrides
from deeprig.tracking.runs import closed_on_failure
from deeprig.tracking.store import (
    TrackingTarget,
    checkpoint_storage,
    deeprig_home,
    resolve_tracking,
)

MIN_CPUS_PER_TRIAL_WORKER = 0.1


@dataclass(frozen=True)
class TuneChecks:
    trial: TrainChecks | None  # data + the budget of one trial's workers (None: rl base)
    concurrency: int
    num_trials: int
    trial_resources: dict[str, float]  # what Tune reserves for one trial


@dataclass(frozen=True)
class TuneOutcome:
    parent_run_id: str | None
    best_metric: float | None
    best_config: dict[str, Any]
    num_trials: int
    num_stopped_early: int
    total_epochs: int
    seconds: float


def count_trials(spec: TuneSpec) -> int:
    grid = math.prod(len(d.grid) for d in spec.search_space.values() if d.kind == "grid")
    return spec.search.num_samples * grid


def check_tune_spec(spec: TuneSpec, resources: ClusterResources) -> TuneChecks:
    """Base checks (data, shapes, resources) plus the search's own: metric, concurrency."""
    if spec.base.kind == "rl":
        from deeprig.runners.tune_rl import check_rl_search, trial_cpus

        concurrency, trials = check_rl_search(spec, resources)
        return TuneChecks(None, concurrency, trials, {"CPU": trial_cpus(spec.base)})
    base_checks = check_train_spec(spec.base, resources)
    problems: list[Problem] = []
    allowed = reported_metrics(base_checks.data.task)
    if spec.search.metric not in allowed:
        problems.append(
            Problem(
                "search.metric",
                f"{spec.search.metric!r} is never reported by the base ({base_checks.data.task}) "
                f"job; one of: {', '.join(sorted(allowed))}",
            )
        )
    if spec.scheduler.name == "pbt" and spec.base.scaling.num_workers > 1:
        problems.append(
            Problem(
                "scheduler.name",
                "pbt needs base.scaling.num_workers: 1 (a multi-worker trial runs a "
                "TorchTrainer, whose checkpoints Train V2 does not hand to Tune, and PBT copies "
                "weights through them); use asha, median or fifo, or one worker per trial",
            )
        )
    n = spec.base.scaling.num_workers
    available = resources.cpus - data_reserve(resources.cpus)
    fits = max(1, math.floor(available / (n * 0.5)))  # half a CPU per worker by default
    if spec.base.scaling.use_gpu:
        fits = min(fits, int(resources.gpus // n))
    trials = count_trials(spec)
    concurrency = min(spec.search.max_concurrent_trials or fits, trials)
    per_worker = math.floor(available / (concurrency * n) * 100) / 100
    if per_worker < MIN_CPUS_PER_TRIAL_WORKER:
        problems.append(
            Problem(
                "search.max_concurrent_trials",
                f"{concurrency} trials x {n} workers leave {per_worker:g} CPU per worker on "
                f"{resources.where} ({resources.cpus:g} CPUs); use at most {fits}",
            )
        )
    if problems:
        raise SpecError(problems)
    if spec.base.scaling.cpus_per_worker is not None:
        per_worker = min(per_worker, spec.base.scaling.cpus_per_worker)
    budget = WorkerBudget(
        cpus_per_worker=per_worker,
        gpus_per_worker=base_checks.budget.gpus_per_worker,
        threads_per_worker=max(1, math.floor(per_worker + 1e-9)),
        data_cpus=base_checks.budget.data_cpus,
    )
    trial = dataclasses.replace(base_checks, budget=budget)
    # A single-worker trial trains itself, so it holds the worker's resources; otherwise
    # the trial only drives its TorchTrainer, whose workers hold the CPUs (a zero request
    # is refused, so a token one).
    resources_per_trial = budget.resources_per_worker() if n == 1 else {"CPU": 0.01}
    return TuneChecks(trial, concurrency, trials, resources_per_trial)


# ------------------------------------------------------------------ trials


@dataclass(frozen=True)
class TrialPlan:
    """What every trial needs; shipped to the trial actors once."""

    base: TrainSpec | RLSpec
    checks: TrainChecks | None
    target: TrackingTarget | None
    experiment: str
    parent_run_id: str | None
    storage: str

    @property
    def in_trial(self) -> bool:
        """A single-worker trial trains inside the Tune trial itself (no worker group);
        so does an rl trial (its algorithm runs in the trial's process)."""
        return self.base.kind == "rl" or self.base.scaling.num_workers == 1


def run_trial(config: dict[str, Any], plan: TrialPlan) -> None:
    """One trial: the base spec with this trial's values, trained by the train runner's
    trainer; each epoch's report goes to Tune (for the scheduler) and MLflow."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from deeprig.cluster.session import quiet_ray_data

    if plan.base.kind == "rl":
        from deeprig.runners.tune_rl import run_rl_trial

        run_rl_trial(config, plan)
        return
    quiet_ray_data()
    trial_id = ray.tune.get_context().get_trial_id()
    spec = TrainSpec.model_validate(apply_overrides(plan.base.model_dump(mode="json"), config))
    recorder = None
    sink = None
    if plan.target is not None:
        from deeprig.tracking.sink import MlflowMetricsSink

        recorder = _trial_run(plan, spec, trial_id, config)
        if recorder.status() == "FINISHED":
            # It finished before the search's driver died, but Tune's saved state missed
            # it: hand Tune its final metrics instead of training it again.
            ray.tune.report(recorder.latest_metrics(), checkpoint=ray.tune.get_checkpoint())
            return
        sink = MlflowMetricsSink(plan.target.uri, recorder.run_id)
    if recorder and sink:
        _log_trial_values(sink, config, _resumed_epoch())
    if plan.in_trial:
        _train_in_trial(spec, plan, recorder.run_id if recorder else None, sink)
        if recorder:
            recorder.finish("FINISHED")
        return
    trainer = build_trainer(
        spec,
        plan.checks,
        recorder.run_id if recorder else None,
        sink,
        plan.storage,
        # Deterministic: a restored search resumes each trial's own Train checkpoints.
        run_name=f"trial-{trial_id}",
        callbacks=[TuneReportCallback()],
    )
    # A failure, or Tune stopping this trial early, ends here with an exception or a killed
    # actor: the driver's TrialRunsCallback closes the run with the right status then.
    trainer.fit()
    if recorder:
        recorder.finish("FINISHED")


def _train_in_trial(spec: TrainSpec, plan: TrialPlan, run_id: str | None, sink) -> None:
    from deeprig.data import build_datasets
    from deeprig.training.loop import run_training
    from deeprig.training.plan import TrainPlan
    from deeprig.training.session import TuneTrialSession

    checks = plan.checks
    train, val = build_datasets(spec.data, checks.data, spec.seed, 1, checks.budget.data_cpus)
    train_plan = TrainPlan(
        spec=spec,
        data=checks.data,
        threads_per_worker=checks.budget.threads_per_worker,
        in_memory=checks.in_memory,
        run_id=run_id,
        sink=sink,
    )
    run_training(train_plan, TuneTrialSession({"train": train, "val": val}, spec.scaling.use_gpu))


def _resumed_epoch() -> int:
    """The epoch a train trial continues from (0 for a fresh one)."""
    import ray.tune

    from deeprig.training.checkpoint import load_state

    checkpoint = ray.tune.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as directory:
        return load_state(directory)["epoch"] + 1


def _log_trial_values(sink, config: dict[str, Any], step: int = 0) -> None:
    """The trial's hyperparameters as metrics too, stepped by epoch: PBT changes them
    mid-trial, and MLflow params are write-once."""
    from deeprig.tracking.sink import numeric_values

    numeric = {f"hp.{k}": v for k, v in numeric_values(config).items()}
    if numeric:
        sink.log(numeric, step=step)


def _trial_run(plan: TrialPlan, spec, trial_id: str, config: dict[str, Any]):
    """The trial's child run: found again when the trial restarts, never duplicated."""
    from deeprig.tracking.runs import RunRecorder, find_child_run

    existing = find_child_run(plan.target, plan.experiment, plan.parent_run_id, trial_id)
    if existing:
        return RunRecorder(plan.target, existing)
    return RunRecorder.create(
        plan.target,
        plan.experiment,
        spec.model_dump(mode="json"),
        json.dumps(config, indent=1),
        Path.cwd(),
        run_name=f"trial-{trial_id}",
        extra_tags={
            "mlflow.parentRunId": plan.parent_run_id,
            "deeprig.parent_run_id": plan.parent_run_id,
            "deeprig.trial_id": trial_id,
            "deeprig.trial_values": json.dumps(config),
        },
    )


def _tune_domain(domain: Domain):
    from ray import tune

    args = domain.args
    return {
        "uniform": lambda: tune.uniform(*args),
        "loguniform": lambda: tune.loguniform(*args),
        "quniform": lambda: tune.quniform(*args),
        "randint": lambda: tune.randint(*args),
        "choice": lambda: tune.choice(list(args)),
        "grid": lambda: tune.grid_search(list(args)),
    }[domain.kind]()


def _search_algorithm(spec: TuneSpec, concurrency: int):
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if spec.search.algorithm == "optuna":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        return ConcurrencyLimiter(OptunaSearch(seed=spec.search.seed), concurrency)
    return BasicVariantGenerator(max_concurrent=concurrency, random_state=spec.search.seed)


def _max_iterations(spec: TuneSpec) -> int:
    """ASHA's longest trial: the base's epochs, or an rl base's iteration limit (a large
    bound when it stops on steps or time: ASHA's rungs then stop at grace * factor^k)."""
    if spec.base.kind == "rl":
        return spec.base.stop.iterations or 10_000
    return spec.base.optim.num_epochs


def _scheduler(spec: TuneSpec):
    from ray.tune.schedulers import (
        ASHAScheduler,
        FIFOScheduler,
        MedianStoppingRule,
        PopulationBasedTraining,
    )

    sched = spec.scheduler
    if sched.name == "pbt":
        return PopulationBasedTraining(
            time_attr="training_iteration",
            perturbation_interval=sched.perturbation_interval,
            hyperparam_mutations={path: _tune_domain(d) for path, d in spec.search_space.items()},
        )
    if sched.name == "asha":
        return ASHAScheduler(
            time_attr="training_iteration",
            max_t=_max_iterations(spec),
            grace_period=sched.grace_period,
            reduction_factor=sched.reduction_factor,
        )
    if sched.name == "median":
        return MedianStoppingRule(
            time_attr="training_iteration",
            grace_period=sched.grace_period,
            min_samples_required=3,
        )
    return FIFOScheduler()


# ------------------------------------------------------------------ the search


def run_tune(
    spec: TuneSpec,
    *,
    spec_text: str,
    spec_path: Path,
    address: str | None = None,
    console: Console | None = None,
    home: Path | None = None,
    resume: bool = False,
) -> TuneOutcome:
    """Run a search to the end; with `resume`, continue the latest unfinished search of
    this name (its Tune state and its MLflow parent run) instead of starting one."""
    console = console or Console()
    home = home or deeprig_home()
    target = resolve_tracking(spec.tracking.uri, home) if spec.tracking.enabled else None
    checks = None if address else check_tune_spec(spec, local_resources())
    resumed = find_unfinished_run(spec, target, "search") if resume else None
    with ray_session(address):
        if checks is None:
            resources = connected_resources()
            checks = check_tune_spec(spec, resources)
            check_connected_cluster(spec, resources, target)
        parent = open_job_run(spec, spec_text, spec_path, target, resumed, console)
        with closed_on_failure(parent):
            outcome = _search(spec, checks, parent, target, home, console, resumed is not None)
    return outcome


def _search(
    spec: TuneSpec,
    checks: TuneChecks,
    parent,
    target,
    home: Path,
    console: Console,
    resume: bool = False,
):
    from ray import tune

    from deeprig.progress import SearchProgress
    from deeprig.tracking.trials import TrialRunsCallback

    started = time.perf_counter()
    parent_id = parent.run_id if parent else None
    name = f"{spec.name}-{parent_id[:8]}" if parent_id else f"{spec.name}-{int(time.time())}"
    storage = f"{checkpoint_storage(storage_setting(spec), home)}/tune"
    if "://" not in storage:
        Path(storage).mkdir(parents=True, exist_ok=True)
    plan = TrialPlan(
        base=spec.base,
        checks=checks.trial,
        target=target,
        experiment=spec.experiment_name,
        parent_run_id=parent_id,
        storage=f"{storage}/{name}/train",
    )
    if spec.base.kind == "rl":
        per_trial = f"{spec.base.algorithm} on {spec.base.env}, {checks.trial_resources['CPU']:g}"
        # An rl trial ends itself when it meets its stop criteria (a `completed` report).
        full_length = None
    else:
        per_trial = (
            f"{spec.base.scaling.num_workers} worker(s) x {checks.trial.budget.cpus_per_worker:g}"
        )
        full_length = spec.base.optim.num_epochs
    console.print(
        f"Searching {len(spec.search_space)} hyperparameter(s) of {spec.base.name}: "
        f"{checks.num_trials} trials, {checks.concurrency} at a time, "
        f"{spec.search.algorithm} search, {spec.scheduler.name} scheduler, "
        f"{per_trial} CPU per trial"
    )
    progress = SearchProgress(console, checks.num_trials, spec.search.metric, spec.search.mode)
    callback = TrialRunsCallback(target, spec.experiment_name, parent_id, full_length, progress)
    trainable = tune.with_resources(functools.partial(run_trial, plan=plan), checks.trial_resources)
    # Tune saves its experiment state at most every 10 s by default; a trial started in
    # that window is unknown after a restore, and its MLflow run would be an orphan.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    # ...which is deliberate: don't warn about it on every save.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune's own console reporter (its "new output" engine prints even at verbose=0);
    # deeprig draws the search's progress itself.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    tuner = tune.Tuner(
        trainable,
        param_space={path: _tune_domain(d) for path, d in spec.search_space.items()},
        tune_config=tune.TuneConfig(
            metric=spec.search.metric,
            mode=spec.search.mode,
            search_alg=_search_algorithm(spec, checks.concurrency),
            scheduler=_scheduler(spec),
            num_samples=spec.search.num_samples,
            # Both search algorithms carry the concurrency limit themselves.
            max_concurrent_trials=None,
            # A trial that trains in its own actor can take the next config in the same
            # process: no new process, no second import of torch (~2-4 s a trial here).
            # Not for TorchTrainer trials: a reused actor keeps the old trainer running.
            reuse_actors=plan.in_trial,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            callbacks=[callback],
            verbose=0,
            # PBT copies a good trial's checkpoint into a poor one, by a path it noted
            # earlier: keep them all (small) for pbt, the last few otherwise.
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=None if spec.scheduler.name == "pbt" else 3
            ),
        ),
    )
    if resume:
        path = f"{storage}/{name}"
        if not tune.Tuner.can_restore(str(path)):
            raise SpecError([Problem("--resume", f"no search state to resume at {path}")])
        # Finished trials keep their results; unfinished ones start again under the same
        # trial id, so they find their MLflow run and their Train checkpoints again.
        tuner = tune.Tuner.restore(
            str(path), trainable, resume_unfinished=True, resume_errored=True
        )
        _swap_callback(tuner, callback)
    with progress:
        results = tuner.fit()
    if resume and parent is not None:
        _drop_orphan_runs(parent, results)
    return _record_search(spec, checks, results, parent, started)


def _drop_orphan_runs(parent, results) -> None:
    """Trials the dead driver started but never saved in Tune's state do not exist for the
    restored search (it ran replacements): their child runs are deleted (MLflow keeps
    them restorable) and listed on the parent, so each trial has exactly one run."""
    known = {r.metrics.get("trial_id") for r in results if r.metrics}
    # Every trial the search knows was closed by TrialRunsCallback; a run still RUNNING
    # now belongs to a trial only the dead driver knew.
    orphans = {
        trial: run_id
        for trial, (run_id, _) in _child_runs(parent).items()
        if trial not in known and parent.client.get_run(run_id).info.status == "RUNNING"
    }
    for run_id in orphans.values():
        parent.client.set_tag(run_id, "deeprig.orphaned_by_resume", "true")
        parent.client.set_terminated(run_id, status="KILLED")
        parent.client.delete_run(run_id)
    if orphans:
        parent.set_tags({"deeprig.orphan_runs_deleted": ",".join(sorted(orphans.values()))})


def _swap_callback(tuner, callback) -> None:
    """A restored Tuner brings back the callback it pickled, without the live display."""
    run_config = tuner._local_tuner.get_run_config()  # Tuner.restore takes no run_config
    run_config.callbacks = [
        callback if isinstance(c, type(callback)) else c for c in run_config.callbacks or []
    ]


def _record_search(spec: TuneSpec, checks: TuneChecks, results, parent, started):
    metric, mode = spec.search.metric, spec.search.mode
    frames = {
        r.metrics.get("trial_id", str(i)): r.metrics_dataframe
        for i, r in enumerate(results)
        if r.metrics_dataframe is not None
    }
    total_epochs = sum(len(f) for f in frames.values())
    errors = [r for r in results if r.error]
    ok = [r for r in results if not r.error and r.metrics and metric in r.metrics]
    if not ok:
        raise RuntimeError(f"all {len(errors)} trials failed; first error: {errors[0].error}")
    best = results.get_best_result(metric=metric, mode=mode, scope="all")
    best_frame = best.metrics_dataframe
    best_value = float(best_frame[metric].min() if mode == "min" else best_frame[metric].max())
    best_config = {k: v for k, v in best.config.items()}
    best_trial = best.metrics.get("trial_id")
    children = _child_runs(parent) if parent else {}
    stopped_early = sum(
        tags.get("deeprig.stopped_early") == "true" for _, tags in children.values()
    )
    outcome = TuneOutcome(
        parent_run_id=parent.run_id if parent else None,
        best_metric=best_value,
        best_config=best_config,
        num_trials=len(results),
        num_stopped_early=stopped_early,
        total_epochs=total_epochs,
        seconds=time.perf_counter() - started,
    )
    if parent is None:
        return outcome
    from mlflow.entities import Metric, Param

    client = parent.client
    now = int(time.time() * 1000)
    client.log_batch(
        parent.run_id,
        metrics=[
            Metric(f"best_{metric}", best_value, now, 0),
            Metric("num_trials", len(results), now, 0),
            Metric("num_trials_stopped_early", stopped_early, now, 0),
            Metric("num_trials_failed", len(errors), now, 0),
            Metric("total_epochs", total_epochs, now, 0),
        ],
        params=[Param(f"best.{k}", json.dumps(v)) for k, v in best_config.items()],
    )
    best_child = children.get(best_trial, (None, {}))[0]
    parent.set_tags(
        {
            "deeprig.best_trial_id": str(best_trial),
            "deeprig.best_run_id": best_child or "",
        }
    )
    if best_child:
        client.set_tag(best_child, "deeprig.best_trial", "true")
    _log_trials_table(parent, results, metric)
    _log_search_plot(parent, frames, metric, best_trial)
    if best.checkpoint is not None and spec.base.kind == "rl":
        with best.checkpoint.as_directory() as directory:  # `deeprig eval` restores it
            parent.log_directory(Path(directory), "checkpoints/best")
    elif best.checkpoint is not None:  # a trial that trained in the Tune trial itself
        with best.checkpoint.as_directory() as directory:
            _log_best_model(parent, spec, checks, best_config, directory)
    elif best.metrics.get("checkpoint_path"):  # a TorchTrainer trial's last checkpoint
        _log_best_model(parent, spec, checks, best_config, best.metrics["checkpoint_path"])
    parent.finish("FINISHED")
    return outcome


def _child_runs(parent) -> dict[str, tuple[str, dict[str, str]]]:
    """trial id -> (run id, tags) of the parent's child runs, read back from MLflow."""
    experiment_id = parent.client.get_run(parent.run_id).info.experiment_id
    runs = parent.client.search_runs(
        [experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.run_id}'"
    )
    return {r.data.tags.get("deeprig.trial_id", ""): (r.info.run_id, r.data.tags) for r in runs}


def _log_trials_table(parent, results, metric: str) -> None:
    frame = results.get_dataframe(filter_metric=metric, filter_mode=None)
    keep = [
        c
        for c in frame.columns
        if c.startswith("config/")
        or c
        in (
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
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trials.csv"
        frame[keep].to_csv(path, index=False)
        parent.client.log_artifact(parent.run_id, str(path))


def _log_search_plot(parent, frames, metric: str, best_trial) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for trial_id, frame in frames.items():
        if metric not in frame:
            continue
        is_best = trial_id == best_trial
        ax.plot(
            frame["training_iteration"],
            frame[metric],
            marker=".",
            linewidth=2.5 if is_best else 1,
            alpha=1 if is_best else 0.5,
            label=f"{trial_id} (best)" if is_best else None,
        )
    ax.set(xlabel="epoch", ylabel=metric, title=f"{metric} by epoch, all trials")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    parent.client.log_figure(parent.run_id, fig, "plots/search.png")
    plt.close(fig)


def _log_best_model(parent, spec: TuneSpec, checks: TuneChecks, config, checkpoint_path):
    import numpy as np

    from deeprig.models import build_model
    from deeprig.training.checkpoint import load_state

    best_spec = TrainSpec.model_validate(apply_overrides(spec.base.model_dump(mode="json"), config))
    state = load_state(checkpoint_path)
    model = build_model(
        best_spec.model, checks.trial.data.input_shape, checks.trial.data.num_outputs
    )
    model.load_state_dict(state["model"])
    sample = np.zeros((2, *checks.trial.data.input_shape), dtype=np.float32)
    parent.log_torch_model(model, sample, spec.tracking.register_as)
