"""Rank 0's step-level metric points (`tracking.log_every_n_steps`) and when they are sent.

A point every N optimiser steps goes to the sink, which buffers them (tracking/sink.py);
this component decides when the buffer must be out: before every checkpoint exists (a
resume from it recomputes only the points after it) and when training ends. Always
built; with no `log_every_n_steps`, or on a rank without a run (a `NullSink`), it
records nothing.
"""

from __future__ import annotations

import torch

from deeprig.training.epoch import Position
from deeprig.training.worker_config import MetricsSink


class StepMetrics:
    def __init__(
        self,
        every_n_steps: int | None,
        sink: MetricsSink,
        optimizer: torch.optim.Optimizer,
        steps_per_epoch: int | None,
    ):
        self._every = every_n_steps
        self._sink = sink  # rank 0's; a NullSink elsewhere
        self._optimizer = optimizer
        self._steps_per_epoch = steps_per_epoch  # None: a streamed shard of unknown length

    def after_step(self, position: Position, loss: torch.Tensor) -> None:
        if not self._every or position.global_step % self._every:
            return
        point = {
            "step/train_loss": float(loss.item()),  # (reading it syncs a GPU: only here)
            "step/lr": self._optimizer.param_groups[0]["lr"],
            "step/epoch": position.epoch + 1,
            "step/in_epoch": position.steps_in_epoch,
        }
        if self._steps_per_epoch is not None:
            point["step/per_epoch"] = self._steps_per_epoch
        self._sink.log_step(point, step=position.global_step)

    def before_checkpoint(self) -> None:
        """Every point up to a checkpoint is recorded before it exists."""
        self._sink.flush()

    def close(self) -> None:
        self._sink.flush()
