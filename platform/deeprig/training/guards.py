"""What ends a training job before its last epoch: a diverged loss, or a stalled metric."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deeprig.failures import FailureClass, JobFailure
from deeprig.tracking.tags import Tag

if TYPE_CHECKING:
    from deeprig.spec.optim import EarlyStoppingSpec
    from deeprig.training.state import TrainState
    from deeprig.training.worker_config import MetricsSink


class NonFiniteLoss(JobFailure):
    """The loss became NaN or infinite: training stops at that step on every rank."""

    def __init__(self, epoch: int, step: int):
        super().__init__(FailureClass.NON_FINITE_LOSS, where=f"epoch {epoch + 1}, step {step + 1}")
        self.epoch, self.step = epoch, step

    def __reduce__(self) -> tuple[type, tuple[int, int]]:
        # Every rank raises it and Ray ships each to the controller by pickle: rebuilt
        # from (epoch, step), it stays a NonFiniteLoss.
        return (type(self), (self.epoch, self.step))


class EarlyStop:
    """Patience on the all-reduced epoch metrics: every rank decides the same. Its two
    numbers travel in the checkpoint, so a restarted job waits no longer than it would
    have. Always built: without `early_stopping` it never stops."""

    def __init__(
        self,
        spec: EarlyStoppingSpec | None,
        sink: MetricsSink,
        restored: TrainState | None = None,
    ):
        self.spec = spec
        self._sink = sink  # rank 0's; a NullSink elsewhere
        self.best = restored.early_stop_best if restored else None
        self.stale = restored.early_stop_stale if restored else 0

    def should_stop(self, metrics: dict[str, float]) -> bool:
        """Whether the epoch that reported `metrics` is the last (tagged on the run)."""
        if self.spec is None or self.spec.metric not in metrics:
            return False
        value = metrics[self.spec.metric]
        sign = 1.0 if self.spec.mode == "min" else -1.0
        if self.best is None or sign * (self.best - value) > self.spec.min_delta:
            self.best, self.stale = value, 0
            return False
        self.stale += 1
        if self.stale < self.spec.patience:
            return False
        self._sink.tag(Tag.STOPPED_EARLY, "true")
        self._sink.tag(Tag.STOPPED_AT_EPOCH, str(int(metrics["epoch"])))
        return True
