"""Per-epoch metrics logged to MLflow from the Ray Train controller, not the worker.

Every epoch's metrics already travel to the controller with `ray.train.report`. Logging
them there keeps MLflow's client work (SQLAlchemy on an embedded store, ~0.1 s of Python
an epoch) off the training worker, whose single thread it would otherwise share (the GIL):
`benchmarks/tracking.py` measured that cost in the worker's epoch time.
"""

from __future__ import annotations

from typing import Any

from ray.train import UserCallback

from deeprig.tracking.sink import MlflowMetricsSink, numeric_values
from deeprig.training.report_keys import ENDED_AT, LAST_REPORT, STEP_CHECKPOINT


class EpochMetricsLogger(UserCallback):
    """`num_epochs`: deeprig's loop reports each epoch once and the last is known; None for
    the user's own loop, whose every report is recorded at its step: its `epoch` (or
    `step`) when it reports one, else the count of its reports."""

    def __init__(self, sink: MlflowMetricsSink, num_epochs: int | None):
        self.sink = sink
        self.num_epochs = num_epochs
        self.reports = 0
        # The newest step the run already holds: a job resumed from a checkpoint (after a
        # worker or the driver died) trains again the epochs after it, and must not log
        # them twice. Asked of MLflow once, at the first report.
        self.recorded_through: int | None = None

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        reported = numeric_values(metrics[0] if metrics else {})
        if STEP_CHECKPOINT in reported:
            return
        last = bool(reported.pop(LAST_REPORT, 0))
        ended_at = reported.pop(ENDED_AT, None)
        self.reports += 1
        if self.num_epochs is not None and "epoch" not in reported:
            return
        if "epoch" in reported:
            step = int(reported["epoch"]) - 1
        else:
            step = int(reported.get("step", self.reports - 1))
        if self.recorded_through is None:
            key = "epoch" if "epoch" in reported else next(iter(reported), None)
            self.recorded_through = self.sink.newest_step(key) if key else -1
        # The sink sends one batch at a time, in order; the last epoch's is waited for, so
        # it is recorded before the controller (and the driver's fit()) finishes. The
        # user's loop's last report is unknown: each is waited for.
        if step > self.recorded_through:
            self.sink.log(reported, step=step, timestamp=ended_at)
            self.recorded_through = step
        if last or self.num_epochs is None or step + 1 >= self.num_epochs:
            self.sink.flush()
