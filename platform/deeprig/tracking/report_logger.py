"""Per-epoch metrics logged to MLflow from the Ray Train controller, not the worker.

Every epoch's metrics already travel to the controller with `ray.train.report`. Logging
them there keeps MLflow's client work (SQLAlchemy on an embedded store, ~0.1 s of Python
an epoch) off the training worker, whose single thread it would otherwise share (the GIL):
`benchmarks/tracking.py` measured that cost in the worker's epoch time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ray.train import UserCallback
from ray.train.v2._internal.execution.callback import ControllerCallback

from deeprig.report_keys import (
    ENDED_AT,
    LAST_REPORT,
    STEP_CHECKPOINT,
    WORKER_PARAMS,
    user_report_step,
)
from deeprig.tracking.sink import MlflowMetricsSink, numeric_values
from deeprig.tracking.tags import Tag


class WorldSizes:
    """An elastic job's sizes, as its reports show them (one per rank): each epoch's
    `world_size` (and deeprig's loop's `batch_per_worker`), the sizes the job ran at in
    order (`deeprig.world_sizes`, "2,1,2") and its worker-group restarts after a failure
    (`deeprig.restarts`); a resize restarts the workers too, and shows as a new size."""

    def __init__(self, batch_per_worker: Callable[[int], int] | None = None):
        self.batch_per_worker = batch_per_worker
        self.sizes: list[int] = []
        self.restarts = 0

    def seen(self, world_size: int) -> dict[str, float]:
        """The metrics an epoch reported by `world_size` ranks adds."""
        if not self.sizes or self.sizes[-1] != world_size:
            self.sizes.append(world_size)
        added = {"world_size": float(world_size)}
        if self.batch_per_worker is not None:
            added["batch_per_worker"] = float(self.batch_per_worker(world_size))
        return added

    def tags(self) -> dict[str, str]:
        return {
            Tag.WORLD_SIZES: ",".join(str(n) for n in self.sizes),
            Tag.RESTARTS: str(self.restarts),
        }


class SinkWarmUp(ControllerCallback):
    """On the Ray Train controller: MLflow imported and its store opened in a background
    thread from the controller's start, while the workers start, instead of at the first
    report: ~1.3 s of CPU on 2 CPUs that a short job's end otherwise waits for (the last
    epoch's record is waited for before training ends)."""

    def __init__(self, sink: MlflowMetricsSink):
        self.sink = sink

    def after_controller_start(self, train_run_context: Any) -> None:
        threading.Thread(target=self.sink.warm_up, name="deeprig-sink-warm-up", daemon=True).start()


class EpochMetricsLogger(UserCallback):
    """`num_epochs`: deeprig's loop reports each epoch once, its `epoch` from 1, and the
    last is known; None for the user's own loop, whose every report is recorded at its own
    `step` or `epoch` (`user_report_step`). A user's report that cannot be placed there (it
    carries neither, or repeats a step already recorded, outside a restart's replay) is
    named in the run's `deeprig.unplaced_reports` tag, which the driver prints."""

    def __init__(
        self, sink: MlflowMetricsSink, num_epochs: int | None, elastic: WorldSizes | None = None
    ):
        self.sink = sink
        self.num_epochs = num_epochs
        self.elastic = elastic  # an elastic job's sizes: recorded on each epoch and as tags
        self.tagged_sizes: dict[str, str] = {}
        # The newest step the run already holds: a job resumed from a checkpoint (after a
        # worker or the driver died) trains again the epochs after it, and must not log
        # them twice. Asked of MLflow once, at the first report.
        self.recorded_through: int | None = None
        # After a restart the user's loop may report again steps the run holds (it resumes
        # from its last checkpoint): those repeats are expected, not the loop's mistake.
        self.replaying = False
        self.reports = 0
        self.first_unkeyed: int | None = None  # the first report without `step` or `epoch`
        self.repeated: list[int] = []  # steps reported again outside a replay, not recorded
        self.tagged = ""

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        first = metrics[0] if metrics else {}  # (rank 0's)
        if self.num_epochs is not None and (params := first.get(WORKER_PARAMS)):
            self.sink.log_params(params)
        reported = numeric_values(first)
        if STEP_CHECKPOINT in reported:
            return
        last = bool(reported.pop(LAST_REPORT, 0))
        ended_at = reported.pop(ENDED_AT, None)
        if self.elastic is not None:
            reported |= self.elastic.seen(len(metrics))
            self._tag_sizes()
        if self.num_epochs is not None:
            if "epoch" not in reported:
                return
            epoch = int(reported["epoch"])
            self._record(reported, epoch - 1, ended_at)
            # The sink sends one batch at a time, in order; the last epoch's is waited for,
            # so it is recorded before the controller (and the driver's fit()) finishes.
            if last or epoch >= self.num_epochs:
                self.sink.flush()
            return
        if not reported:
            return
        self.reports += 1
        step = user_report_step(reported)
        if step is None:
            if self.first_unkeyed is None:
                self.first_unkeyed = self.reports
            step = self._newest(reported) + 1  # in arrival order, after what the run holds
        elif step <= self._newest(reported) and not self.replaying:
            self.repeated.append(step)
        self._record(reported, step, ended_at)
        if (unplaced := self.unplaced()) != self.tagged:
            self.sink.tag(Tag.UNPLACED_REPORTS, unplaced)
            self.tagged = unplaced
        # The user's loop's last report is unknown: each is waited for.
        self.sink.flush()

    def after_exception(self, run_context, worker_exceptions: dict[int, Exception]) -> None:
        self.replaying = True  # the restarted workers resume from their last checkpoint
        if self.elastic is not None:
            self.elastic.restarts += 1
            self._tag_sizes()

    def _tag_sizes(self) -> None:
        assert self.elastic is not None
        for key, value in self.elastic.tags().items():
            if self.tagged_sizes.get(key) != value:
                self.sink.tag(key, value)
                self.tagged_sizes[key] = value

    def _newest(self, reported: dict[str, float]) -> int:
        if self.recorded_through is None:
            key = "epoch" if "epoch" in reported else next(iter(reported))
            self.recorded_through = self.sink.newest_step(key)
            self.replaying = self.recorded_through >= 0  # a resumed run: it replays too
        return self.recorded_through

    def _record(self, reported: dict[str, float], step: int, ended_at: float | None) -> None:
        if step > self._newest(reported):
            self.sink.log(reported, step=step, timestamp=ended_at)
            self.recorded_through = step
            self.replaying = False

    def unplaced(self) -> str:
        """What the `deeprig.unplaced_reports` tag says: which of the user's reports were
        not recorded at a step of their own, and the fix ("" when none). It changes only
        with the first few, so the tag is written a few times at most."""
        parts = []
        if self.first_unkeyed is not None:
            parts.append(
                f"reports without `epoch` or `step` (the first: report {self.first_unkeyed}) "
                "were recorded in the order they came; report `epoch` (or `step`) to place them"
            )
        if self.repeated:
            steps = ", ".join(str(s) for s in self.repeated[:5])
            more = ", ..." if len(self.repeated) > 5 else ""
            parts.append(
                f"reports repeating a step already recorded ({steps}{more}) were not "
                "recorded; report each `epoch` (or `step`) once"
            )
        return ". ".join(parts)
