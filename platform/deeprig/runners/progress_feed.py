"""Live progress without MLflow (`tracking.enabled: false`): the Ray Train controller puts
each report on a Ray queue, and the driver's progress display reads the newest."""

from __future__ import annotations

from typing import Any

from ray.train import UserCallback

from deeprig.report_keys import STEP_CHECKPOINT


class ReportsToQueue(UserCallback):
    def __init__(self, queue: Any):
        self.queue = queue

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        # (a mid-epoch checkpoint's report holds no metric worth showing)
        if metrics and STEP_CHECKPOINT not in metrics[0]:
            self.queue.put_nowait(dict(metrics[0]))


class LatestReport:
    """A poll function for EpochProgress: the newest report on the queue so far; and every
    report so far (`history`), for a line of each epoch."""

    def __init__(self, queue: Any):
        self.queue = queue
        self.reports: list[dict[str, float]] = []

    def __call__(self) -> dict[str, float]:
        while not self.queue.empty():
            self.reports.append(self.queue.get_nowait())
        return self.reports[-1] if self.reports else {}

    def history(self) -> list[dict[str, float]]:
        return list(self.reports)


def report_queue() -> Any:
    from ray.util.queue import Queue

    # A tiny actor of its own: it must not wait for a CPU the workers hold.
    return Queue(actor_options={"num_cpus": 0})
