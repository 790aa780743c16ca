"""Exact resume, in one place: when a checkpoint is written, what it holds, and how a
restored worker carries on as if it had never stopped. The project's hardest invariant;
every rule of it is here:

1. A checkpoint at an epoch's end, every `checkpoint.every_n_epochs` and at the last one
   (`Checkpointer.save`), and inside an epoch every `checkpoint.every_n_steps` optimiser
   steps, never on the epoch's last step, whose epoch checkpoint follows it
   (`Checkpointer.after_step`). Each holds the weights, optimiser, scheduler and scaler,
   the global step, early stopping's patience, the last finished epoch's metrics and
   confusion matrix; a mid-epoch one also the micro-batches of the epoch done and the
   epoch's running (loss sum, rows) summed over every rank (`_state`).
2. The same batches and the same draws. An epoch's batch order is fixed by (seed, epoch),
   so the rest of an interrupted epoch is its batches after `batches_done`; torch's
   randomness is reseeded from (seed, rank, epoch, micro-batch) where every epoch starts
   and after every mid-epoch checkpoint (`reseed`), on every rank: no generator state is
   saved, and a resume from either point draws what the uninterrupted run drew.
3. The restored epoch reported again (`resume`): the controller logs an epoch after its
   checkpoint exists, so a driver killed in between leaves a checkpoint whose epoch the
   run lacks; the controller's logger records the replay only where the run lacks it.
4. No metric point twice, none lost: the step points up to a checkpoint are sent before
   it exists (`StepMetrics.before_checkpoint`); a restarted sink sends no step the run
   already holds (tracking/sink.py).
5. A node drained with notice (a spot reclaim, `ray drain-node`): every epoch that ends
   while the notice stands is checkpointed whatever the cadence (the first one's step
   tagged), so the restart on the nodes left, once the node goes, loses at most the steps
   of one epoch (`Checkpointer.save`).
"""

from __future__ import annotations

import sys
import time

import torch
import torch.distributed as dist

from deeprig.report_keys import ENDED_AT, STEP_CHECKPOINT
from deeprig.tracking.tags import Tag
from deeprig.training.epoch import Position
from deeprig.training.guards import EarlyStop
from deeprig.training.parts import TrainParts, train_state
from deeprig.training.session import WorkerSession
from deeprig.training.state import TrainState
from deeprig.training.step_metrics import StepMetrics
from deeprig.training.worker_config import MetricsSink, WorkerConfig


def reseed(seed: int, rank: int, position: Position) -> None:
    """Torch's randomness (dropout, augmentation) drawn from a stream fixed by (seed, rank,
    epoch, micro-batch): rule 2."""
    mixed = seed * 1_000_003 + rank * 7919 + position.epoch * 104_729 + position.batches_done
    torch.manual_seed(mixed % 2**63)


def resume(
    worker: WorkerConfig, session: WorkerSession, restored: TrainState | None, sink: MetricsSink
) -> bool:
    """Say where the job resumed and report the restored epoch again (rule 3); True when
    no epoch is left to train.

    Every rank reports (a report is a barrier). No run, no replay: a job with tracking
    off, and a search's trials (Tune counts every report as an iteration, and their driver
    records each trial from Tune's results)."""
    if restored is None:
        return False
    sink.tag(Tag.RESUMED_FROM_EPOCH, str(restored.next_epoch))
    if restored.mid_epoch:
        sink.tag(Tag.RESUMED_FROM_STEP, str(restored.global_step))
    # Restored from the final checkpoint (its driver died while recording the end):
    # nothing left to train, but the caller still needs the final metrics, replay or not.
    done = restored.next_epoch >= worker.spec.optim.num_epochs
    # (a checkpoint inside the first epoch has no finished epoch's metrics)
    replay = worker.run_id is not None and "epoch" in restored.metrics
    if replay or done:
        # Marked as this loop's report (ENDED_AT: now, when it reaches the run), so a
        # trial's recorder places it at `epoch - 1` as every other, not as a user's loop's.
        session.report({**restored.metrics, ENDED_AT: time.time()}, None)
    return done


class Checkpointer:
    """Decides when a checkpoint is due and builds it; places every epoch (rules 1, 2).
    Always built: it checkpoints every epoch at least, as `checkpoint.every_n_epochs`
    defaults to 1."""

    def __init__(
        self,
        worker: WorkerConfig,
        session: WorkerSession,
        parts: TrainParts,
        early_stop: EarlyStop,
        step_metrics: StepMetrics,
        steps_per_epoch: int | None,
        sink: MetricsSink,
    ):
        spec = worker.spec
        self._worker, self._session, self._parts = worker, session, parts
        self._sink = sink
        self._preemption_tagged = False  # (a notice lasts until the workers restart)
        self._early_stop, self._step_metrics = early_stop, step_metrics
        self._every_n_epochs = spec.checkpoint.every_n_epochs
        self._every_n_steps = spec.checkpoint.every_n_steps
        self._steps_per_epoch = steps_per_epoch
        self._accumulate = spec.optim.accumulate_steps
        self._restored = parts.restored
        restored = parts.restored
        # The last finished epoch's metrics and confusion matrix: what a mid-epoch state
        # carries (handed over by `save` at each epoch's end).
        self._last_metrics: dict[str, float] = restored.metrics if restored else {}
        self._last_confusion = restored.confusion_matrix if restored else None
        # A mid-epoch checkpoint ranks below every epoch's: Ray Train keeps it while it is
        # the latest, and never hands it back as the best.
        worst = sys.float_info.max if spec.checkpoint.mode == "min" else -sys.float_info.max
        self._unranked = {spec.checkpoint.metric: worst, STEP_CHECKPOINT: 1.0}

    def epoch_start(self, epoch: int, previous: Position | None) -> Position:
        """Where `epoch` starts: its beginning, or inside it where a restored mid-epoch
        checkpoint left it; reseeded from there."""
        restored = self._restored
        if restored is not None and restored.mid_epoch and restored.epoch == epoch:
            position = Position(
                epoch,
                restored.batches_done,
                restored.global_step,
                restored.batches_done // self._accumulate,  # (on step boundaries)
                rows_before=restored.epoch_totals[1],
            )
            # The epoch's running totals over every rank, held by rank 0 alone (the
            # epoch's all-reduce then adds them up once).
            if self._session.rank == 0:
                position.totals += torch.tensor(restored.epoch_totals)
        else:
            global_step = restored.global_step if restored else 0
            position = Position(
                epoch, global_step=previous.global_step if previous else global_step
            )
        position.totals = position.totals.to(self._session.device())
        reseed(self._worker.spec.seed, self._session.rank, position)
        return position

    def after_step(self, position: Position, loss: torch.Tensor) -> None:
        """A mid-epoch checkpoint when one is due (every rank: its report is a barrier)."""
        every = self._every_n_steps
        if not every or position.global_step % every or self._ends_epoch(position):
            return
        # The epoch's running loss summed over every rank: rank 0 alone carries it on.
        totals = self._running_totals(position)
        state = None
        if self._session.rank == 0 or self._worker.spec.scaling.strategy == "fsdp":
            state = self._state(
                position,
                self._last_metrics,
                batches_done=position.batches_done,
                epoch_totals=totals,
            )
        self._step_metrics.before_checkpoint()
        report = {**self._unranked, "global_step": float(position.global_step)}
        self._session.report_step_checkpoint(report, state)
        reseed(self._worker.spec.seed, self._session.rank, position)

    def save(
        self,
        position: Position,
        metrics: dict[str, float],
        confusion: list[list[int]] | None,
        last: bool,
    ) -> TrainState | None:
        """The checkpoint of the epoch that just ended with `metrics` (and, classifying,
        its validation `confusion` matrix) when one is due: every `every_n_epochs`, and
        the `last` epoch the job trains."""
        self._last_metrics = metrics
        if confusion is not None:
            self._last_confusion = confusion
        preempted = self._under_preemption_notice(position)
        if not (last or preempted) and (position.epoch + 1) % self._every_n_epochs:
            return None
        self._step_metrics.before_checkpoint()
        return self._state(position, metrics)

    def _under_preemption_notice(self, position: Position) -> bool:
        """Rule 5: True at every epoch end while a notice stands (asked on every rank: the
        notice is a barrier), the first tagging the step its checkpoint holds."""
        if not self._session.preemption_notice():
            return False
        if not self._preemption_tagged:
            self._preemption_tagged = True
            self._sink.tag(Tag.PREEMPTED_AT_STEP, str(position.global_step))
        return True

    def _ends_epoch(self, position: Position) -> bool:
        return self._steps_per_epoch == position.steps_in_epoch

    def _state(self, position: Position, metrics: dict[str, float], **inside) -> TrainState:
        return train_state(
            self._parts,
            self._worker,
            position.epoch,
            metrics,
            global_step=position.global_step,
            early_stop_best=self._early_stop.best,
            early_stop_stale=self._early_stop.stale,
            confusion_matrix=self._last_confusion,
            **inside,
        )

    def _running_totals(self, position: Position) -> tuple[float, float]:
        totals = position.totals.clone()
        if self._session.world_size > 1:
            dist.all_reduce(totals)
        loss_sum, rows = totals.tolist()
        return float(loss_sum), float(rows)
