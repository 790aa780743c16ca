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


class EpochMetricsLogger(UserCallback):
    def __init__(self, sink: MlflowMetricsSink, num_epochs: int):
        self.sink = sink
        self.num_epochs = num_epochs

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        reported = metrics[0] if metrics else {}
        if "epoch" not in reported:
            return
        # The sink sends one batch at a time, in order; the last epoch's is waited for, so
        # it is recorded before the controller (and the driver's fit()) finishes.
        self.sink.log(numeric_values(reported), step=int(reported["epoch"]) - 1)
        if int(reported["epoch"]) >= self.num_epochs:
            self.sink.flush()
