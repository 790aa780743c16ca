"""Searches over an rl base: each Tune trial runs the rl runner's RLlib algorithm (the same
`build_config`) in the trial's own process, one `algo.train()` per Tune report, so ASHA or
the median rule can stop a poor trial after any iteration.

A trial samples in its own process (num_env_runners 0) or with its env runners; it asks
Tune for one CPU plus one per env runner, so trials never over-ask the cluster.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from typing import TYPE_CHECKING, Any

from deeprig.cluster.resources import ClusterResources
from deeprig.runners.rl import RESULT_METRICS, flatten_result, should_stop
from deeprig.runners.rl_config import accepted_training_keys, build_config, check_rl_spec
from deeprig.runners.tune.trial import SearchBase, TrialContext, TuneChecked, hand_back_finished
from deeprig.spec.errors import Problem, SpecError
from deeprig.spec.rl import RLSpec
from deeprig.spec.tune import TuneSpec, apply_overrides
from deeprig.tracking.trial_reports import TrialReports

if TYPE_CHECKING:  # (mlflow's import is ~2 s; `validate` needs none of it)
    from deeprig.tracking.runs import RunRecorder

# What an rl trial reports (and a search may optimise).
RL_METRICS = frozenset(RESULT_METRICS.values()) | {"env_steps_per_s"}
# The key of a trial's last report when it met its own stop criteria (1.0), as opposed to
# being stopped by the scheduler.
COMPLETED = "completed"


def trial_cpus(base: RLSpec) -> float:
    return 1.0 + base.env_runners.num_env_runners


def check_rl_search(spec: TuneSpec, resources: ClusterResources) -> TuneChecked:
    """The base's own checks, the searched training keys, the metric, the concurrency."""
    base = spec.base
    assert isinstance(base, RLSpec)
    problems: list[Problem] = []
    try:
        check_rl_spec(base)
    except SpecError as exc:
        problems += [Problem(f"base.{p.path}", p.message, p.line) for p in exc.problems]
    allowed = accepted_training_keys(base.algorithm)
    for path in spec.search_space:
        section, _, key = path.partition(".")
        if section == "training" and key.split(".")[0] not in allowed:
            problems.append(
                Problem(f"search_space.{path}", f"{base.algorithm} does not take {key!r}")
            )
    if spec.search.metric not in RL_METRICS:
        problems.append(
            Problem(
                "search.metric",
                f"{spec.search.metric!r} is never reported by an rl job; one of: "
                f"{', '.join(sorted(RL_METRICS))}",
            )
        )
    per_trial = trial_cpus(base)
    if per_trial > resources.max_node_cpus:
        problems.append(
            Problem(
                "base.env_runners.num_env_runners",
                f"a trial needs {per_trial:g} CPUs (1 + one per env runner); the largest node "
                f"of {resources.where} has {resources.max_node_cpus:g}",
            )
        )
    if problems:
        raise SpecError(problems)
    fits = max(1, math.floor(resources.cpus / per_trial))
    concurrency = min(spec.search.max_concurrent_trials or fits, fits, spec.num_trials)
    return TuneChecked(
        spec,
        None,
        concurrency,
        {"CPU": per_trial},
        base_summary=f"{base.algorithm} on {base.env}",
    )


def run_rl_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """One trial: the base rl spec with this trial's values, trained iteration by
    iteration; every iteration's metrics go to Tune (for the scheduler) and MLflow."""
    import ray.tune

    # RLlib warns, in every trial, about its own deprecations and the new API stack.
    for name in ("ray.rllib", "ray.tune.utils.util"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if hand_back_finished(ctx, ray.tune.get_context().get_trial_id()):
        return
    spec = RLSpec.model_validate(apply_overrides(ctx.base.model_dump(mode="json"), config))
    algo = build_config(spec).build_algo()
    iteration = 0
    restored = ray.tune.get_checkpoint()
    if restored is not None:  # a restored search continues the trial where it was saved
        with restored.as_directory() as directory:
            algo.restore_from_path(directory)
        iteration = int(algo.iteration or 0)
    started = time.perf_counter()
    try:
        while True:
            metrics = flatten_result(algo.train())
            iteration += 1
            done = should_stop(spec, metrics, iteration, time.perf_counter() - started)
            report = {**metrics, COMPLETED: float(done)}
            if done or iteration % spec.checkpoint.every_n_iterations == 0:
                with tempfile.TemporaryDirectory() as directory:
                    algo.save_to_path(directory)
                    ray.tune.report(
                        report, checkpoint=ray.tune.Checkpoint.from_directory(directory)
                    )
            else:
                ray.tune.report(report)
            if done:
                break
    finally:
        algo.stop()


def _judge(base: RLSpec, result: dict[str, Any]) -> tuple[int, bool]:
    # The trial says when it met its stop criteria; otherwise the scheduler stopped it.
    return int(result.get("training_iteration", 0)), not result.get(COMPLETED)


def _log_best_checkpoint(
    parent: RunRecorder, spec: TuneSpec, checked: TuneChecked, best: Any
) -> None:
    from pathlib import Path

    if best.checkpoint is not None:
        with best.checkpoint.as_directory() as directory:  # `deeprig eval` restores it
            parent.log_directory(Path(directory), "checkpoints/best")


RL_BASE = SearchBase(
    unit="iterations",
    in_trial=lambda base: True,  # the algorithm runs in the trial's own process
    check=check_rl_search,
    trial=run_rl_trial,
    # ASHA's longest trial: the iteration limit, or a large bound when the trial stops on
    # steps or time (ASHA's rungs then stop at grace * factor^k).
    max_iterations=lambda base: base.stop.iterations or 10_000,
    judge=_judge,
    # The iteration, as an rl job records it (a restored trial's count goes on).
    reports=TrialReports(
        step_of=lambda result, reports: int(result["training_iteration"]),
        markers=frozenset({COMPLETED}),
    ),
    log_best=_log_best_checkpoint,
)
