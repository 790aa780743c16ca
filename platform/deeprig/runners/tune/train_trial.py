"""Searches over a train base: the search's own checks, one trial, the best model."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from deeprig.cluster.resources import ClusterResources, ResourceProblems, budget_trials
from deeprig.report_keys import (
    ENDED_AT,
    LAST_REPORT,
    STEP_CHECKPOINT,
    user_report_step,
)
from deeprig.runners import train
from deeprig.runners.train_checked import what_trains
from deeprig.runners.train_metrics import reported_metrics
from deeprig.runners.train_record import log_trained_model
from deeprig.runners.train_trainer import build_trainer, prepare_data, worker_config
from deeprig.runners.tune.trial import SearchBase, TrialContext, TuneChecked, hand_back_finished
from deeprig.spec.errors import Problem, SpecError
from deeprig.spec.train import TrainSpec
from deeprig.spec.tune import TuneSpec, apply_overrides
from deeprig.tracking.trial_reports import TrialReports

if TYPE_CHECKING:  # (mlflow's import is ~2 s; `validate` needs none of it)
    from deeprig.tracking.runs import RunRecorder


def check_train_search(spec: TuneSpec, resources: ClusterResources) -> TuneChecked:
    """Base checks (data, shapes, resources) plus the search's own: metric, concurrency."""
    assert isinstance(spec.base, TrainSpec)
    base_checked = train.check(spec.base, resources)
    problems: list[Problem] = []
    allowed = reported_metrics(spec.base, base_checked.data)
    problems += _check_user_code_extremes(spec, base_checked)
    if spec.search.metric not in allowed:
        problems.append(
            Problem(
                "search.metric",
                f"{spec.search.metric!r} is never reported by the base "
                f"({base_checked.data.task if base_checked.data else 'loop'}) job; one of: "
                f"{', '.join(sorted(allowed))}",
            )
        )
    if spec.scheduler.name == "pbt" and spec.base.scaling.num_workers != 1:  # (or elastic)
        problems.append(
            Problem(
                "scheduler.name",
                "pbt needs base.scaling.num_workers: 1 (a multi-worker trial runs a "
                "TorchTrainer, whose checkpoints Train V2 does not hand to Tune, and PBT copies "
                "weights through them); use asha, median or fifo, or one worker per trial",
            )
        )
    if spec.base.tracking.log_every_n_steps is not None:
        problems.append(
            Problem(
                "base.tracking.log_every_n_steps",
                "a search records its trials from Tune's results, once an epoch (the "
                "driver logs them; trials never talk to MLflow); remove it from the base",
            )
        )
    if spec.base.checkpoint.every_n_steps is not None:
        problems.append(
            Problem(
                "base.checkpoint.every_n_steps",
                "a search's trials checkpoint once an epoch (a Tune scheduler counts every "
                "report as an iteration); remove it from the base",
            )
        )
    try:
        concurrency, budget = budget_trials(
            spec.base.scaling, resources, spec.num_trials, spec.search.max_concurrent_trials
        )
    except ResourceProblems as exc:
        problems += exc.problems
    if problems:
        raise SpecError(problems)
    trial = dataclasses.replace(base_checked, budget=budget)
    # A single-worker trial trains itself, so it holds the worker's resources; otherwise
    # the trial only drives its TorchTrainer, whose workers hold the CPUs (a zero request
    # is refused, so a token one).
    one_worker = spec.base.scaling.num_workers == 1  # (an elastic base's trial drives Train)
    resources_per_trial = budget.resources_per_worker() if one_worker else {"CPU": 0.01}
    return TuneChecked(
        spec,
        trial,
        concurrency,
        resources_per_trial,
        base_summary=f"{what_trains(spec.base)} on {_source(spec.base)}",
    )


def _source(base: TrainSpec) -> str:
    return base.data.source if base.data is not None else "its own data"


def _check_user_code_extremes(spec: TuneSpec, base_checked: Any) -> list[Problem]:
    """The user-code checks (args bound, dry run) for the values a trial could get at the
    edges of each domain over `model.args.*` or `loop.config.*`."""
    from deeprig.runners.user_code import check_model_and_loop

    problems: list[Problem] = []
    base = spec.base.model_dump(mode="json")
    for path, domain in spec.search_space.items():
        if not path.startswith(("model.args.", "loop.config.")):
            continue
        for value in domain.extremes():
            trial_spec = TrainSpec.model_validate(apply_overrides(base, {path: value}))
            found = check_model_and_loop(trial_spec, base_checked.data)
            if found:
                first = found[0]
                problems.append(
                    Problem(
                        f"search_space.{path}",
                        f"value {value!r}: {first.path}: {first.message}",
                    )
                )
                break
    return problems


def run_train_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """One trial: the base spec with this trial's values, trained by the train runner's
    trainer; each epoch's report goes to Tune (for the scheduler) and MLflow."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from deeprig.cluster.session import quiet_ray_data

    quiet_ray_data()
    assert ctx.checked is not None
    if ctx.checked.code is not None:  # the data function and model come from the user
        ctx.checked.code.install()
    trial_id = ray.tune.get_context().get_trial_id()
    if hand_back_finished(ctx, trial_id):
        return
    spec = TrainSpec.model_validate(apply_overrides(ctx.base.model_dump(mode="json"), config))
    if ctx.in_trial:
        _train_in_trial(spec, ctx)
        return
    trainer = build_trainer(
        spec,
        ctx.checked,
        prepare_data(spec, ctx.checked),
        None,
        None,
        ctx.storage,
        # Deterministic: a restored search resumes each trial's own Train checkpoints.
        run_name=f"trial-{trial_id}",
        callbacks=[TuneReportCallback()],
    )
    # A failure, or Tune stopping this trial early, ends here with an exception or a
    # killed actor: the driver's TrialRunsCallback closes the run with the right status.
    trainer.fit()


def _train_in_trial(spec: TrainSpec, ctx: TrialContext) -> None:
    from deeprig.data import build_datasets
    from deeprig.training.loop import run_training
    from deeprig.training.session import TuneTrialSession

    checked = ctx.checked
    assert checked is not None and spec.data is not None and checked.data is not None
    prepared = build_datasets(
        spec.data, checked.data, spec.seed, 1, checked.budget.data_cpus, checked.in_memory
    )
    # The trial is the one worker: arrays it holds in memory need no Ray Data at all.
    arrays = prepared.arrays if checked.in_memory else None
    session = TuneTrialSession({} if arrays else prepared.for_trainer(), spec.scaling.use_gpu)
    # No run id and no sink: the driver records the trial from its reports.
    worker = worker_config(spec, checked, prepared.fitted, None, None, arrays)
    run_training(worker, session)


def _judge(base: TrainSpec, result: dict[str, Any]) -> tuple[int, bool]:
    epochs = int(result.get("epoch", 0))
    return epochs, epochs < base.optim.num_epochs


def _step_of(result: dict[str, Any], reports: int) -> int:
    """deeprig's loop reports each epoch, from 1 (its reports carry ENDED_AT); the user's
    loop is recorded at its `step` or `epoch` as given, else in the order it reports (as a
    train job records them)."""
    if ENDED_AT in result:
        return int(result["epoch"]) - 1
    step = user_report_step(result)
    return reports - 1 if step is None else step


def _log_best_model(parent: RunRecorder, spec: TuneSpec, checked: TuneChecked, best: Any) -> None:
    from pathlib import Path

    from deeprig.training.state import TrainState

    if isinstance(spec.base, TrainSpec) and spec.base.loop is not None:
        # The user's loop writes checkpoints deeprig cannot read: logged as they are.
        path = best.metrics.get("checkpoint_path")
        if best.checkpoint is not None:
            with best.checkpoint.as_directory() as directory:
                parent.log_directory(Path(directory), "checkpoints/best")
        elif path:
            parent.log_directory(Path(path), "checkpoints/best")
        return
    # (whole: a sharded checkpoint's model is gathered while its folder is at hand)
    if best.checkpoint is not None:  # a trial that trained in the Tune trial itself
        with best.checkpoint.as_directory() as directory:
            state = TrainState.load(directory).whole()
    elif best.metrics.get("checkpoint_path"):  # a TorchTrainer trial's last checkpoint
        state = TrainState.load(best.metrics["checkpoint_path"]).whole()
    else:
        return
    code = checked.trial.code if checked.trial else None
    log_trained_model(parent, state, spec.tracking.register_as, code)


TRAIN_BASE = SearchBase(
    unit="epochs",
    # One worker trains inside the Tune trial itself (no worker group); the user's own loop
    # runs under Ray Train, as it was written for.
    in_trial=lambda base: base.scaling.num_workers == 1 and base.loop is None,
    check=check_train_search,
    trial=run_train_trial,
    max_iterations=lambda base: base.optim.num_epochs,
    judge=_judge,
    reports=TrialReports(
        step_of=_step_of,
        markers=frozenset({ENDED_AT, LAST_REPORT, STEP_CHECKPOINT}),
        timestamp_key=ENDED_AT,
    ),
    log_best=_log_best_model,
)
