"""The Ray Tune `Tuner` of a search: its domains, search algorithm and scheduler, built
fresh or restored from a dead driver's saved state."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from deeprig.spec.errors import Problem, SpecError
from deeprig.spec.tune import Domain, TuneSpec


def build_tuner(
    spec: TuneSpec,
    trainable: Any,
    concurrency: int,
    max_iterations: int,
    reuse_actors: bool,
    name: str,
    storage: str,
    callbacks: list[Any],
) -> Any:
    from ray import tune

    _quiet_tune()
    return tune.Tuner(
        trainable,
        param_space={path: tune_domain(d) for path, d in spec.search_space.items()},
        tune_config=tune.TuneConfig(
            metric=spec.search.metric,
            mode=spec.search.mode,
            search_alg=_search_algorithm(spec, concurrency),
            scheduler=_scheduler(spec, max_iterations),
            num_samples=spec.search.num_samples,
            # Both search algorithms carry the concurrency limit themselves.
            max_concurrent_trials=None,
            # A trial that trains in its own actor can take the next config in the same
            # process: no new process, no second import of torch (~2-4 s a trial here).
            # Not for TorchTrainer trials: a reused actor keeps the old trainer running.
            reuse_actors=reuse_actors,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            callbacks=callbacks,
            verbose=0,
            # Keep every trial checkpoint. Tune's saved search state names each trial's
            # latest checkpoint as of its last save (every TUNE_GLOBAL_CHECKPOINT_S); with
            # num_to_keep=3 a fast trial deletes that one before the next save, and a
            # driver killed in between cannot --resume the trial ("does not exist on
            # storage anymore"). PBT too copies checkpoints by paths it noted earlier.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        ),
    )


def restore_tuner(path: str, trainable: Any, callback: Any) -> Any:
    """The search saved at `path`, with `callback` in place of the one Tune pickled (which
    came back without the live display). SpecError when nothing is saved there."""
    from ray import tune

    if not tune.Tuner.can_restore(path):
        raise SpecError([Problem("--resume", f"no search state to resume at {path}")])
    # Finished trials keep their results; unfinished ones start again under the same
    # trial id, so they find their MLflow run and their Train checkpoints again.
    tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
    local_tuner = tuner._local_tuner  # Tuner.restore takes no run_config: set it on the inside
    assert local_tuner is not None  # (None only for a Tuner driven over Ray Client)
    run_config = local_tuner.get_run_config()
    run_config.callbacks = [
        callback if isinstance(c, type(callback)) else c for c in run_config.callbacks or []
    ]
    return tuner


def _quiet_tune() -> None:
    # Tune saves its experiment state at most every 10 s by default; a trial started in
    # that window is unknown after a restore, and its MLflow run would be an orphan.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    # ...which is deliberate: don't warn about it on every save.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune's own console reporter (its "new output" engine prints even at verbose=0);
    # deeprig draws the search's progress itself.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def tune_domain(domain: Domain) -> Any:
    from ray import tune

    args = domain.args
    build: dict[str, Callable[[], Any]] = {
        "uniform": lambda: tune.uniform(*args),
        "loguniform": lambda: tune.loguniform(*args),
        "quniform": lambda: tune.quniform(*args),
        "randint": lambda: tune.randint(*args),
        "choice": lambda: tune.choice(list(args)),
        "grid": lambda: tune.grid_search(list(args)),
    }
    return build[domain.kind]()


def _search_algorithm(spec: TuneSpec, concurrency: int) -> Any:
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if spec.search.algorithm == "optuna":
        import optuna
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        # Optuna announces each study at INFO on the terminal; the search's progress is ours.
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return ConcurrencyLimiter(OptunaSearch(seed=spec.search.seed), concurrency)
    return BasicVariantGenerator(max_concurrent=concurrency, random_state=spec.search.seed)


def _scheduler(spec: TuneSpec, max_iterations: int) -> Any:
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
            hyperparam_mutations={path: tune_domain(d) for path, d in spec.search_space.items()},
        )
    if sched.name == "asha":
        return ASHAScheduler(
            time_attr="training_iteration",
            max_t=max_iterations,
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
