"""The training loop: run by Ray Train on every worker (DDP or FSDP), or inside a Tune trial.

Every rank trains, evaluates its validation shard and reports each epoch (under Ray
Train the report is a barrier). Only rank 0 has side effects: it writes the checkpoint
(under FSDP every rank writes its shards of it) and tags the run. What the loop needs
from its surroundings comes through a `WorkerSession` (training/session.py); what it saves
is a `TrainState` (training/state.py); one epoch's steps are training/epoch.py's, what
happens every N steps training/step_hooks.py's.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from deeprig.data.shard import ShardBatches, array_shard
from deeprig.report_keys import ENDED_AT, LAST_REPORT
from deeprig.spec.train import TrainSpec
from deeprig.tracking.null import NullSink
from deeprig.tracking.tags import Tag
from deeprig.training.augment import batch_augment
from deeprig.training.epoch import Position, StepParts, reseed, train_epoch
from deeprig.training.evaluate import evaluate, loss_function, split_metrics
from deeprig.training.guards import EarlyStop
from deeprig.training.memory import memory_metrics
from deeprig.training.parts import TrainParts, build_parts
from deeprig.training.scores import ClassScores
from deeprig.training.session import RayTrainSession, WorkerSession
from deeprig.training.sharding import is_sharded, reshard
from deeprig.training.state import TrainState
from deeprig.training.step_hooks import StepHooks
from deeprig.training.worker_config import WorkerConfig


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Entry point of a Ray Train worker."""
    # Ray Train logs every report at INFO on each worker (through a logger named after its
    # source file, so only the root level catches it); progress is the driver's job.
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    worker: WorkerConfig = config["worker"]
    run_training(worker, RayTrainSession(worker.spec.checkpoint.async_save))


def run_training(worker: WorkerConfig, session: WorkerSession) -> None:
    spec = worker.spec
    if worker.code is not None:
        worker.code.install()
    torch.set_num_threads(worker.threads_per_worker)
    # Same seed on every rank: identical initial weights (DDP also broadcasts rank 0's).
    torch.manual_seed(spec.seed)
    device = session.device()
    parts = build_parts(worker, session, device)
    restored = parts.restored
    sink = worker.sink if session.rank == 0 else NullSink()
    if restored is not None:
        sink.tag(Tag.RESUMED_FROM_EPOCH, str(parts.start_epoch))
        if restored.mid_epoch:
            sink.tag(Tag.RESUMED_FROM_STEP, str(restored.global_step))
    if restored is not None and _report_restored(worker, session, restored, parts.start_epoch):
        return

    classification = worker.data.task == "classification"
    train, val = _open_shards(worker, session, device)
    loss_fn = loss_function(worker.data.task)
    step = _step_parts(parts, loss_fn, classification, spec, session.world_size)
    sharded = is_sharded(parts.model)
    step = dataclasses.replace(step, augment=batch_augment(spec.data))
    early_stop = EarlyStop(
        spec.early_stopping,
        restored.early_stop_best if restored else None,
        restored.early_stop_stale if restored else 0,
    )
    position = _start_position(restored, parts.start_epoch, spec.optim.accumulate_steps)
    hooks = StepHooks(worker, session, parts, early_stop, train.num_batches(), sink)
    for epoch in range(parts.start_epoch, spec.optim.num_epochs):
        if position.epoch != epoch:
            position = Position(epoch, global_step=position.global_step)
        inside = _resumed_inside(restored, epoch)
        position.totals = _running_totals(inside, session.rank, device)
        reseed(spec.seed, session.rank, position)
        started = time.perf_counter()
        train_totals = train_epoch(step, train, position, hooks.after_step)
        train_seconds = time.perf_counter() - started
        lr = parts.optimizer.param_groups[0]["lr"]
        parts.scheduler.step()
        scores = ClassScores(worker.data.num_outputs, device) if classification else None
        val_totals = evaluate(
            parts.raw_model, val, loss_fn, scores, device, parts.autocast_dtype, sharded
        )
        if sharded:
            reshard(parts.model)
        both = torch.cat([train_totals, val_totals])
        if session.world_size > 1:
            dist.all_reduce(both)
        # (resumed inside this epoch: its rows before the checkpoint took no time here)
        rows_before = inside.epoch_totals[1] if inside else 0.0
        target_std = worker.fitted.target_std or 1.0
        metrics = _epoch_metrics(
            both, epoch, lr, started, train_seconds, worker.data.task, rows_before, target_std
        )
        metrics |= _scores(scores, worker, session.world_size, hooks)
        metrics |= memory_metrics(parts.model, session.world_size, device)
        sink.log(metrics, step=epoch)  # (under Ray Train the controller logs epochs: a no-op)
        stop = early_stop.should_stop(metrics)
        if stop:
            sink.tag(Tag.STOPPED_EARLY, "true")
            sink.tag(Tag.STOPPED_AT_EPOCH, str(epoch + 1))
        due = (epoch + 1) % spec.checkpoint.every_n_epochs == 0
        last = epoch + 1 == spec.optim.num_epochs or stop
        hooks.last_metrics = metrics
        state = hooks.state(position, metrics) if due or last else None
        if state is not None:
            sink.flush()  # every step point up to a checkpoint is recorded before it exists
        report = {**metrics, ENDED_AT: time.time()} | ({LAST_REPORT: 1.0} if last else {})
        session.report(report, state)
        if stop:
            break
    sink.flush()


def _report_restored(
    worker: WorkerConfig, session: WorkerSession, restored: TrainState, start_epoch: int
) -> bool:
    """Report the restored checkpoint's epoch again; True when no epoch is left to train.

    The controller logs an epoch's metrics asynchronously, after its checkpoint exists: a
    driver killed in between leaves a checkpoint whose epoch the run lacks. Reported again,
    the controller's logger records it where the run lacks it and passes over it where the
    run holds it. Every rank reports (a report is a barrier). No run, no replay: a job with
    tracking off, and a search's trials (Tune counts every report as an iteration, and
    their driver records each trial from Tune's results).
    """
    # Restored from the final checkpoint (its driver died while recording the end):
    # nothing left to train, but the caller still needs the final metrics, replay or not.
    done = start_epoch >= worker.spec.optim.num_epochs
    # (a checkpoint inside the first epoch has no finished epoch's metrics)
    replay = worker.run_id is not None and "epoch" in restored.metrics
    if replay or done:
        session.report(restored.metrics, None)
    return done


def _start_position(restored: TrainState | None, start_epoch: int, accumulate: int) -> Position:
    if restored is None:
        return Position(start_epoch)
    if restored.mid_epoch:
        steps = restored.batches_done // accumulate  # (checkpoints fall on step boundaries)
        return Position(restored.epoch, restored.batches_done, restored.global_step, steps)
    return Position(start_epoch, global_step=restored.global_step)


def _resumed_inside(restored: TrainState | None, epoch: int) -> TrainState | None:
    """The mid-epoch checkpoint training resumed from, when it lies inside `epoch`."""
    if restored is not None and restored.mid_epoch and restored.epoch == epoch:
        return restored
    return None


def _running_totals(inside: TrainState | None, rank: int, device: torch.device) -> torch.Tensor:
    """The epoch's running (loss sum, rows) at its start: zero, or, resuming inside it,
    the sum over every rank saved at the checkpoint, held by rank 0 (the epoch's
    all-reduce then adds it up once)."""
    totals = torch.zeros(2, device=device)
    if inside is not None and rank == 0:
        totals += torch.tensor(inside.epoch_totals, device=device)
    return totals


def _open_shards(
    worker: WorkerConfig, session: WorkerSession, device: torch.device
) -> tuple[ShardBatches, ShardBatches]:
    spec = worker.spec
    label_dtype = torch.float32 if worker.data.task == "regression" else torch.long
    input_dtype = torch.long if worker.data.input_dtype == "int64" else torch.float32

    def shard(name: str):
        if worker.arrays is not None:
            return array_shard(worker.arrays[name], session.rank, session.world_size)
        return session.dataset(name)

    train = ShardBatches(
        shard("train"),
        spec.batch_per_worker(session.world_size),  # (elastic: the global batch kept)
        device,
        label_dtype,
        worker.in_memory,
        seed=spec.seed * 31 + session.rank,
        input_dtype=input_dtype,
    )
    val = ShardBatches(
        shard("val"),
        max(spec.optim.batch_size, 1024),
        device,
        label_dtype,
        worker.in_memory,
        seed=0,
        input_dtype=input_dtype,
    )
    if session.world_size > 1 and train.num_rows is not None:
        # DDP hangs if one rank runs more steps than another: keep the smallest shard size.
        rows = torch.tensor([train.num_rows], device=device)
        dist.all_reduce(rows, op=dist.ReduceOp.MIN)
        train.truncate(int(rows.item()))
    return train, val


def _step_parts(
    parts: TrainParts, loss_fn: nn.Module, classification: bool, spec: TrainSpec, world_size: int
) -> StepParts:
    return StepParts(
        model=parts.model,
        optimizer=parts.optimizer,
        scaler=parts.scaler,
        loss_fn=loss_fn,
        classification=classification,
        autocast_dtype=parts.autocast_dtype,
        accumulate_steps=spec.optim.accumulate_steps,
        grad_clip_norm=spec.optim.grad_clip_norm,
        world_size=world_size,
    )


def _scores(
    scores: ClassScores | None, worker: WorkerConfig, world_size: int, hooks: StepHooks
) -> dict[str, float]:
    """The epoch's metrics beyond loss and accuracy: macro F1 and AUC (classification;
    the confusion matrix goes into the checkpoint), or the regression errors in the
    target's own units, each beside its baseline's (audio: a logistic regression's
    accuracy; time series: persistence's errors)."""
    if scores is not None:
        extra, hooks.last_confusion = scores.compute(world_size)
        return {f"val_{name}": value for name, value in extra.items()} | dict(
            worker.fitted.baseline
        )
    return dict(worker.fitted.baseline)


def _epoch_metrics(
    totals: torch.Tensor,
    epoch: int,
    lr: float,
    started: float,
    train_seconds: float,
    task: str,
    rows_before: float = 0.0,
    target_std: float = 1.0,
) -> dict[str, float]:
    """The epoch's report from the totals summed over every rank (`rows_before`: rows of
    it trained before a mid-epoch resume, in the loss but not in the throughput)."""
    train_loss_sum, train_rows, val_loss_sum, val_hits, val_rows, val_abs = totals.tolist()
    metrics = {
        "epoch": epoch + 1,
        "train_loss": train_loss_sum / max(train_rows, 1),
        "lr": lr,
        "epoch_time_s": time.perf_counter() - started,
        "samples_per_s": (train_rows - rows_before) / max(train_seconds, 1e-9),
    }
    scores = split_metrics(task, val_loss_sum, val_hits, val_rows, val_abs, target_std)
    return metrics | {f"val_{name}": value for name, value in scores.items()}
