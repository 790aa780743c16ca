"""What every trial of a search shares, whatever the kind of its base: the pre-flight's
result, the context shipped to trial actors, the per-base operations, trial bookkeeping."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from rich.console import Console
from rich.table import Table

from deeprig.spec.rl import RLSpec
from deeprig.spec.train import TrainSpec
from deeprig.spec.tune import TuneSpec
from deeprig.tracking.trial_reports import TrialReports

if TYPE_CHECKING:
    from ray.tune import Result

    from deeprig.cluster.resources import ClusterResources
    from deeprig.runners.train_checked import TrainChecked
    from deeprig.tracking.runs import RunRecorder


@dataclass(frozen=True)
class TuneChecked:
    spec: TuneSpec
    trial: TrainChecked | None  # data + the budget of one trial's workers (None: rl base)
    concurrency: int
    trial_resources: dict[str, float]  # what Tune reserves for one trial
    base_summary: str  # "cnn on builtin:digits", "PPO on CartPole-v1"

    @property
    def num_trials(self) -> int:
        return self.spec.num_trials

    @property
    def summary(self) -> str:
        return (
            f"{self.num_trials} trials of {self.base_summary}, {self.concurrency} at a time, "
            f"{self.spec.search.algorithm} + {self.spec.scheduler.name}"
        )


@dataclass(frozen=True)
class TuneOutcome:
    job_name: str
    experiment: str
    metric: str
    unit: str  # what a trial counts: epochs or iterations
    parent_run_id: str | None
    best_run_id: str | None  # the best trial's MLflow run (Tune's trial ids are not in MLflow)
    best_metric: float | None
    best_config: dict[str, Any]
    num_trials: int
    num_stopped_early: int
    total_epochs: int
    seconds: float
    note: str = ""  # what the search could not record (its tracking server away)

    def render(self, console: Console) -> None:
        table = Table(title=f"{self.job_name}: best trial", show_header=True)
        table.add_column("")
        table.add_column("value", justify="right")
        table.add_row(f"best {self.metric}", f"{self.best_metric:.4g}")
        if self.best_run_id:
            table.add_row("best trial's run", self.best_run_id)
        for key, value in self.best_config.items():
            table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
        table.add_row("trials", str(self.num_trials))
        table.add_row("stopped early", str(self.num_stopped_early))
        table.add_row(f"{self.unit} trained", str(self.total_epochs))
        console.print(table)
        console.print(f"finished in {self.seconds:.1f} s")
        if self.note:
            console.print(f"[yellow]{self.note}[/]", soft_wrap=True)
        if self.parent_run_id:
            console.print(
                f"MLflow parent run [bold]{self.parent_run_id}[/], one child run per trial\n"
                f"  see it: [bold]deeprig ui[/] then open the experiment '{self.experiment}'"
            )


@dataclass(frozen=True)
class TrialContext:
    """What every trial needs; shipped to the trial actors once. No MLflow in it: the
    driver records the trials (tracking/trials.py)."""

    base: TrainSpec | RLSpec
    checked: TrainChecked | None
    storage: str  # where a TorchTrainer trial keeps its Train checkpoints
    in_trial: bool  # the trial trains in its own process (its base's SearchBase.in_trial)
    # A restored search: trial id -> final metrics of each trial whose run finished before
    # the old driver died. Tune reruns such a trial when its saved state missed the end;
    # the trial hands Tune these instead of training again.
    finished: dict[str, dict[str, float]] = field(default_factory=dict)


class Trainable(Protocol):
    """A trial's function: Tune calls it with the trial's values; `ctx` is bound first."""

    def __call__(self, config: dict[str, Any], ctx: TrialContext) -> None: ...


@dataclass(frozen=True)
class SearchBase:
    """What a search needs from the kind of its base spec (its `Runner.search_base`)."""

    unit: str  # what a trial reports once per: "epochs" / "iterations"
    # Whether a trial trains inside the Tune trial itself (no worker group of its own).
    in_trial: Callable[[Any], bool]
    check: Callable[[TuneSpec, ClusterResources], TuneChecked]
    trial: Trainable
    # ASHA's longest trial, in reports.
    max_iterations: Callable[[Any], int]
    # (units trained, stopped early) of a completed trial, from its last result.
    judge: Callable[[Any, dict[str, Any]], tuple[int, bool]]
    # How its reports become the trial's MLflow points (steps, markers, timestamps).
    reports: TrialReports
    # Log the best trial's model or checkpoint on the search's parent run.
    log_best: Callable[[RunRecorder, TuneSpec, TuneChecked, Result], None]


def hand_back_finished(ctx: TrialContext, trial_id: str) -> bool:
    """True when the trial already finished under the old driver of a restored search:
    its final metrics (and checkpoint) go to Tune, and the trial does not train again."""
    metrics = ctx.finished.get(trial_id)
    if metrics is None:
        return False
    import ray.tune

    from deeprig.report_keys import HANDED_BACK

    ray.tune.report({**metrics, HANDED_BACK: 1.0}, checkpoint=ray.tune.get_checkpoint())
    return True
