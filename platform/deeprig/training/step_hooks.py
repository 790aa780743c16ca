"""What happens between optimiser steps, every N of them: a step-level metric point
(tracking.log_every_n_steps) and a checkpoint inside the epoch (checkpoint.every_n_steps).

A mid-epoch checkpoint is a Ray Train report like an epoch's (every rank reports: it is
a barrier; under FSDP every rank writes its shards) and carries what an exact resume
needs: the weights, optimiser, scheduler and scaler, the micro-batches of the epoch done
(the data order is fixed by seed and epoch, so the rest of it is the same batches), the
epoch's running loss over every rank, and early stopping's patience. The randomness
after it is reseeded from that position (training/epoch.py `reseed`), so it needs no
generator state.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
import torch.distributed as dist

from deeprig.report_keys import STEP_CHECKPOINT
from deeprig.training.epoch import Position, reseed
from deeprig.training.guards import EarlyStop
from deeprig.training.parts import TrainParts, train_state
from deeprig.training.session import WorkerSession
from deeprig.training.state import TrainState
from deeprig.training.worker_config import MetricsSink, WorkerConfig


class StepHooks:
    def __init__(
        self,
        worker: WorkerConfig,
        session: WorkerSession,
        parts: TrainParts,
        early_stop: EarlyStop,
        batches_per_epoch: int | None,
        sink: MetricsSink,
    ):
        spec = worker.spec
        self._worker, self._session, self._parts = worker, session, parts
        self._early_stop = early_stop
        self._sink = sink  # rank 0's; a NullSink elsewhere
        self._log_every = spec.tracking.log_every_n_steps
        self._checkpoint_every = spec.checkpoint.every_n_steps
        accumulate = spec.optim.accumulate_steps
        self._steps_per_epoch = (
            None if batches_per_epoch is None else -(-batches_per_epoch // accumulate)
        )
        self.last_metrics: dict[str, float] = parts.restored.metrics if parts.restored else {}
        # The last epoch's validation confusion matrix (classification), saved with its state.
        self.last_confusion: list[list[int]] | None = (
            parts.restored.confusion_matrix if parts.restored else None
        )
        # A mid-epoch checkpoint ranks below every epoch's: Ray Train keeps it while it is
        # the latest, and never hands it back as the best.
        worst = sys.float_info.max if spec.checkpoint.mode == "min" else -sys.float_info.max
        self._unranked = {spec.checkpoint.metric: worst, STEP_CHECKPOINT: 1.0}

    def after_step(self, position: Position, loss: torch.Tensor) -> None:
        step = position.global_step
        if self._log_every and step % self._log_every == 0:
            self._log_step(position, loss)
        # (not on the epoch's last step: the epoch's own checkpoint follows it)
        due = bool(self._checkpoint_every) and step % (self._checkpoint_every or 1) == 0
        if due and self._steps_per_epoch != position.steps_in_epoch:
            self._checkpoint_inside_epoch(position)

    def state(self, position: Position, metrics: dict[str, float], **inside: Any) -> TrainState:
        """The checkpoint at the end of `position.epoch` (`inside`: where in it, for a
        mid-epoch one)."""
        return train_state(
            self._parts,
            self._worker,
            position.epoch,
            metrics,
            global_step=position.global_step,
            early_stop_best=self._early_stop.best,
            early_stop_stale=self._early_stop.stale,
            confusion_matrix=self.last_confusion,
            **inside,
        )

    def _log_step(self, position: Position, loss: torch.Tensor) -> None:
        point = {
            "step/train_loss": float(loss.item()),
            "step/lr": self._parts.optimizer.param_groups[0]["lr"],
            "step/epoch": position.epoch + 1,
            "step/in_epoch": position.steps_in_epoch,
        }
        if self._steps_per_epoch is not None:
            point["step/per_epoch"] = self._steps_per_epoch
        self._sink.log_step(point, step=position.global_step)

    def _checkpoint_inside_epoch(self, position: Position) -> None:
        # The epoch's running loss summed over every rank: rank 0 alone carries it on.
        totals = self._running_totals(position)
        state = None
        if self._session.rank == 0 or self._worker.spec.scaling.strategy == "fsdp":
            state = self.state(
                position,
                self.last_metrics,
                batches_done=position.batches_done,
                epoch_totals=totals,
            )
        self._sink.flush()  # the step points up to it are recorded before it exists
        report = {**self._unranked, "global_step": float(position.global_step)}
        self._session.report_step_checkpoint(report, state)
        reseed(self._worker.spec.seed, self._session.rank, position)

    def _running_totals(self, position: Position) -> tuple[float, float]:
        totals = position.totals.clone()
        if self._session.world_size > 1:
            dist.all_reduce(totals)
        loss_sum, rows = totals.tolist()
        return float(loss_sum), float(rows)
