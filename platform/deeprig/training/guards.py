"""What ends a training job before its last epoch: a diverged loss, or a stalled metric."""

from __future__ import annotations

from typing import Any

from deeprig.failures import FailureClass, JobFailure


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
    have."""

    def __init__(self, spec: Any, best: float | None = None, stale: int = 0):
        self.spec = spec
        self.best = best
        self.stale = stale

    def should_stop(self, metrics: dict[str, float]) -> bool:
        if self.spec is None or self.spec.metric not in metrics:
            return False
        value = metrics[self.spec.metric]
        sign = 1.0 if self.spec.mode == "min" else -1.0
        if self.best is None or sign * (self.best - value) > self.spec.min_delta:
            self.best, self.stale = value, 0
            return False
        self.stale += 1
        return self.stale >= self.spec.patience
