"""The training loop: run by Ray Train on every worker (DDP or FSDP), or inside a Tune trial.

Every rank trains, evaluates its validation shard and reports each epoch (under Ray
Train the report is a barrier). Only rank 0 has side effects: it writes the checkpoint
(under FSDP every rank writes its shards of it) and tags the run. The loop coordinates
and decides nothing for its components, always built, each owning its cadence and its
state: the `Checkpointer` (when a checkpoint is due, what it holds, where a restored
epoch starts: exact resume, training/checkpointer.py), `EarlyStop` (patience,
training/guards.py) and `StepMetrics` (step points and when they are sent,
training/step_metrics.py). What the loop needs from its surroundings comes through a
`WorkerSession` (training/session.py); one epoch's steps are training/epoch.py's.
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
from deeprig.report_keys import ENDED_AT, LAST_REPORT, WORKER_PARAMS
from deeprig.spec.train import TrainSpec
from deeprig.tracking.null import NullSink
from deeprig.training.augment import batch_augment
from deeprig.training.checkpointer import Checkpointer, resume
from deeprig.training.epoch import Position, StepParts, train_epoch
from deeprig.training.evaluate import evaluate, loss_function, split_metrics
from deeprig.training.flops import worker_throughput
from deeprig.training.guards import EarlyStop
from deeprig.training.memory import memory_metrics
from deeprig.training.parts import TrainParts, build_parts
from deeprig.training.scores import ClassScores
from deeprig.training.session import RayTrainSession, WorkerSession
from deeprig.training.sharding import is_sharded, reshard
from deeprig.training.step_metrics import StepMetrics
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
    """Coordinates: each epoch trains, evaluates and reports; when to checkpoint, to stop
    and to send step points is asked of its components, which hold their own state."""
    spec = worker.spec
    if worker.code is not None:
        worker.code.install()
    torch.set_num_threads(worker.threads_per_worker)
    # Same seed on every rank: identical initial weights (DDP also broadcasts rank 0's).
    torch.manual_seed(spec.seed)
    device = session.device()
    parts = build_parts(worker, session, device)
    sink = worker.sink if session.rank == 0 else NullSink()
    if resume(worker, session, parts.restored, sink):
        return

    classification = worker.data.task == "classification"
    train, val = _open_shards(worker, session, device)
    throughput = worker_throughput(worker, parts, train, session.world_size, device)
    # (they travel with the first report: logging them here would make every rank wait,
    # before its first step, for rank 0 to import MLflow and open its store, ~1.5 s)
    params = throughput.params() if session.rank == 0 and worker.run_id else {}
    loss_fn = loss_function(worker.data.task)
    step = _step_parts(parts, loss_fn, classification, spec, session.world_size)
    sharded = is_sharded(parts.model)
    step = dataclasses.replace(step, augment=batch_augment(spec.data))
    batches = train.num_batches()
    steps_per_epoch = None if batches is None else -(-batches // spec.optim.accumulate_steps)
    early_stop = EarlyStop(spec.early_stopping, sink, parts.restored)
    step_metrics = StepMetrics(
        spec.tracking.log_every_n_steps, sink, parts.optimizer, steps_per_epoch
    )
    checkpointer = Checkpointer(
        worker, session, parts, early_stop, step_metrics, steps_per_epoch, sink
    )

    def after_step(position: Position, loss: torch.Tensor) -> None:
        step_metrics.after_step(position, loss)
        checkpointer.after_step(position, loss)

    position = None
    for epoch in range(parts.start_epoch, spec.optim.num_epochs):
        position = checkpointer.epoch_start(epoch, position)
        started = time.perf_counter()
        train_totals = train_epoch(step, train, position, after_step)
        train_seconds = time.perf_counter() - started
        lr = parts.optimizer.param_groups[0]["lr"]
        parts.scheduler.step()
        scores = ClassScores(worker.data.num_outputs, device) if classification else None
        val_totals = evaluate(
            parts.raw_model,
            val,
            loss_fn,
            scores,
            device,
            parts.autocast_dtype,
            sharded,
            worker.data.num_outputs,
        )
        if sharded:
            reshard(parts.model)
        both = torch.cat([train_totals, val_totals])
        if session.world_size > 1:
            dist.all_reduce(both)
        target_std = worker.fitted.target_std
        metrics = _epoch_metrics(
            both, position, lr, started, train_seconds, worker.data.task, target_std
        )
        metrics |= throughput.metrics(metrics["samples_per_s"], session.world_size)
        extra, confusion = _scores(scores, worker, session.world_size)
        metrics |= extra | memory_metrics(parts.model, session.world_size, device)
        stop = early_stop.should_stop(metrics)
        last = stop or epoch + 1 == spec.optim.num_epochs
        state = checkpointer.save(position, metrics, confusion, last=last)
        first = epoch == parts.start_epoch
        session.report(_report(metrics, last, params if first else {}), state)
        if stop:
            break
    step_metrics.close()


def _report(metrics: dict[str, float], last: bool, params: dict) -> dict[str, Any]:
    """What an epoch reports: its metrics, when it ended, whether it is the job's last, and
    with the first report of rank 0 its parameter counts (`params`)."""
    report: dict[str, Any] = {**metrics, ENDED_AT: time.time()}
    if last:
        report[LAST_REPORT] = 1.0
    if params:
        report[WORKER_PARAMS] = params
    return report


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
    scores: ClassScores | None, worker: WorkerConfig, world_size: int
) -> tuple[dict[str, float], list[list[int]] | None]:
    """The epoch's metrics beyond loss and accuracy, and its validation confusion matrix
    (classification: for the checkpoint): macro F1 and AUC, or the regression errors in
    the target's own units, each beside its baseline's (audio: a logistic regression's
    accuracy; time series: persistence's errors)."""
    baseline = dict(worker.fitted.baseline)
    if scores is None:
        return baseline, None
    extra, confusion = scores.compute(world_size)
    return {f"val_{name}": value for name, value in extra.items()} | baseline, confusion


def _epoch_metrics(
    totals: torch.Tensor,
    position: Position,
    lr: float,
    started: float,
    train_seconds: float,
    task: str,
    target_std: tuple[float, ...] | None = None,
) -> dict[str, float]:
    """The epoch's report from the totals summed over every rank (rows of it trained
    before a resume inside it are in the loss but not in the throughput)."""
    train_loss_sum, train_rows, *val_totals = totals.tolist()
    metrics = {
        "epoch": position.epoch + 1,
        "train_loss": train_loss_sum / max(train_rows, 1),
        "lr": lr,
        "epoch_time_s": time.perf_counter() - started,
        "samples_per_s": (train_rows - position.rows_before) / max(train_seconds, 1e-9),
    }
    scores = split_metrics(task, val_totals, target_std)
    return metrics | {f"val_{name}": value for name, value in scores.items()}
