"""The training loop: run by Ray Train on every DDP worker, or inside a Tune trial.

Every rank trains, evaluates its validation shard and reports each epoch (under Ray
Train the report is a barrier). Only rank 0 has side effects: it writes the checkpoint
and tags the run. What the loop needs from its surroundings comes through a
`WorkerSession` (training/session.py); what it saves is a `TrainState` (training/state.py).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from deeprig.data.shard import ShardBatches
from deeprig.models import build_model
from deeprig.spec.train import TrainSpec
from deeprig.tracking.report_logger import LAST_REPORT
from deeprig.tracking.tags import Tag
from deeprig.training.optim import build_optimizer, build_scheduler
from deeprig.training.session import RayTrainSession, WorkerSession
from deeprig.training.state import TrainState
from deeprig.training.worker_config import WorkerConfig


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite: training stops at that step on every rank."""

    def __init__(self, epoch: int, step: int):
        super().__init__(
            f"non-finite loss at epoch {epoch + 1}, step {step + 1}: training diverged. The "
            "likeliest fixes: a smaller optim.lr, or optim.grad_clip_norm (e.g. 1.0). The "
            "last good checkpoint is kept."
        )
        self.epoch, self.step = epoch, step


class _EarlyStop:
    """Patience on the all-reduced epoch metrics: every rank decides the same."""

    def __init__(self, spec: Any):
        self.spec = spec
        self.best: float | None = None
        self.stale = 0

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


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Entry point of a Ray Train worker."""
    # Ray Train logs every report at INFO on each worker (through a logger named after its
    # source file, so only the root level catches it); progress is the driver's job.
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    run_training(config["worker"], RayTrainSession())


@dataclass
class _Parts:
    """The model and what steps it, restored from a checkpoint or fresh."""

    model: nn.Module  # what trains (DDP-wrapped when world > 1)
    raw_model: nn.Module  # what is saved and evaluated
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    autocast_dtype: torch.dtype | None
    start_epoch: int
    restored: TrainState | None


def run_training(worker: WorkerConfig, session: WorkerSession) -> None:
    spec = worker.spec
    if worker.code is not None:
        worker.code.install()
    torch.set_num_threads(worker.threads_per_worker)
    # Same seed on every rank: identical initial weights (DDP also broadcasts rank 0's).
    torch.manual_seed(spec.seed)
    device = session.device()
    parts = _build_parts(worker, session, device)
    # Different dropout/shuffle streams per rank, reproducible per (seed, rank, epoch).
    torch.manual_seed(spec.seed * 1009 + session.rank + 7919 * parts.start_epoch)
    if parts.restored is not None and parts.start_epoch >= spec.optim.num_epochs:
        # Restored from the final checkpoint (a search resumed after its driver died):
        # nothing left to train, but the caller still needs the final metrics.
        session.report(parts.restored.metrics, None)
        return

    classification = worker.data.task == "classification"
    train, val = _open_shards(worker, session, device)
    sink = worker.sink if session.rank == 0 else None
    if sink is not None and parts.start_epoch > 0:
        sink.tag(Tag.RESUMED_FROM_EPOCH, str(parts.start_epoch))
    loss_fn = (
        nn.CrossEntropyLoss(reduction="sum") if classification else nn.MSELoss(reduction="sum")
    )
    early_stop = _EarlyStop(spec.early_stopping)
    for epoch in range(parts.start_epoch, spec.optim.num_epochs):
        started = time.perf_counter()
        train_totals = _train_epoch(
            parts, train, epoch, loss_fn, classification, spec, session.world_size
        )
        train_seconds = time.perf_counter() - started
        lr = parts.optimizer.param_groups[0]["lr"]
        parts.scheduler.step()
        val_totals = _evaluate(
            parts.raw_model, val, loss_fn, classification, device, parts.autocast_dtype
        )
        both = torch.cat([train_totals, val_totals])
        if session.world_size > 1:
            dist.all_reduce(both)
        metrics = _epoch_metrics(both, epoch, lr, started, train_seconds, classification)
        if sink is not None:  # (under Ray Train the controller logs epochs: a no-op here)
            sink.log(metrics, step=epoch)
        stop = early_stop.should_stop(metrics)
        if stop and sink is not None:
            sink.tag(Tag.STOPPED_EARLY, "true")
            sink.tag(Tag.STOPPED_AT_EPOCH, str(epoch + 1))
        due = (epoch + 1) % spec.checkpoint.every_n_epochs == 0
        last = epoch + 1 == spec.optim.num_epochs or stop
        state = _state(parts, epoch, metrics, worker) if due or last else None
        session.report({**metrics, LAST_REPORT: 1.0} if last else metrics, state)
        if stop:
            break
    if sink is not None:
        sink.flush()


def _build_parts(worker: WorkerConfig, session: WorkerSession, device: torch.device) -> _Parts:
    spec = worker.spec
    assert spec.model is not None  # (a spec without one runs its own loop, not this one)
    model = build_model(spec.model, worker.data.input_shape, worker.data.num_outputs)
    restored = session.restore()
    if restored is not None:
        model.load_state_dict(restored.model)
    model = session.prepare_model(model)
    raw_model = model.module if isinstance(model, DistributedDataParallel) else model
    optimizer = build_optimizer(spec.optim, model.parameters())
    scheduler = build_scheduler(spec.optim, optimizer)
    autocast_dtype = _autocast_dtype(spec.scaling.mixed_precision, device)
    scaler = torch.amp.GradScaler("cuda", enabled=autocast_dtype == torch.float16)
    start_epoch = 0
    if restored is not None:
        optimizer.load_state_dict(restored.optimizer)
        scheduler.load_state_dict(restored.scheduler)
        scaler.load_state_dict(restored.scaler)
        start_epoch = restored.next_epoch
        _apply_changed_hyperparameters(restored, spec, optimizer, scheduler)
    return _Parts(
        model, raw_model, optimizer, scheduler, scaler, autocast_dtype, start_epoch, restored
    )


def _open_shards(
    worker: WorkerConfig, session: WorkerSession, device: torch.device
) -> tuple[ShardBatches, ShardBatches]:
    spec = worker.spec
    label_dtype = torch.long if worker.data.task == "classification" else torch.float32
    train = ShardBatches(
        session.dataset("train"),
        spec.optim.batch_size,
        device,
        label_dtype,
        worker.in_memory,
        seed=spec.seed * 31 + session.rank,
    )
    val = ShardBatches(
        session.dataset("val"),
        max(spec.optim.batch_size, 1024),
        device,
        label_dtype,
        worker.in_memory,
        seed=0,
    )
    if session.world_size > 1 and train.num_rows is not None:
        # DDP hangs if one rank runs more steps than another: keep the smallest shard size.
        rows = torch.tensor([train.num_rows], device=device)
        dist.all_reduce(rows, op=dist.ReduceOp.MIN)
        train.truncate(int(rows.item()))
    return train, val


def _train_epoch(
    parts: _Parts,
    train: ShardBatches,
    epoch: int,
    loss_fn: nn.Module,
    classification: bool,
    spec: TrainSpec,
    world_size: int,
) -> torch.Tensor:
    """One pass over the shard; returns (loss sum, rows) on this rank. A non-finite loss on
    any rank stops every rank at the same step (NonFiniteLoss): one tiny all-reduce a step
    is the price of never leaving a rank waiting in the next gradient all-reduce."""
    model, optimizer, scaler = parts.model, parts.optimizer, parts.scaler
    model.train()
    totals = torch.zeros(2, device=next(model.parameters()).device)
    for step, (x, y) in enumerate(train.epoch(epoch, shuffle=True)):
        optimizer.zero_grad(set_to_none=True)
        with _autocast(x.device, parts.autocast_dtype):
            out = model(x)
            loss = _loss(loss_fn, out, y, classification) / len(y)
        finite = torch.isfinite(loss.detach()).float()
        if world_size > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if finite.item() < 1:
            raise NonFiniteLoss(epoch, step)
        scaler.scale(loss).backward()
        if spec.optim.grad_clip_norm is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), spec.optim.grad_clip_norm)
        scaler.step(optimizer)
        scaler.update()
        totals[0] += loss.detach() * len(y)
        totals[1] += len(y)
    return totals


def _epoch_metrics(
    totals: torch.Tensor,
    epoch: int,
    lr: float,
    started: float,
    train_seconds: float,
    classification: bool,
) -> dict[str, float]:
    """The epoch's report from the totals summed over every rank."""
    train_loss_sum, train_rows, val_loss_sum, val_hits, val_rows = totals.tolist()
    metrics = {
        "epoch": epoch + 1,
        "train_loss": train_loss_sum / max(train_rows, 1),
        "val_loss": val_loss_sum / max(val_rows, 1),
        "lr": lr,
        "epoch_time_s": time.perf_counter() - started,
        "samples_per_s": train_rows / max(train_seconds, 1e-9),
    }
    if classification:
        metrics["val_accuracy"] = val_hits / max(val_rows, 1)
    else:
        metrics["val_rmse"] = (val_loss_sum / max(val_rows, 1)) ** 0.5
    return metrics


def _state(parts: _Parts, epoch: int, metrics: dict[str, float], worker: WorkerConfig):
    return TrainState(
        model=parts.raw_model.state_dict(),
        optimizer=parts.optimizer.state_dict(),
        scheduler=parts.scheduler.state_dict(),
        scaler=parts.scaler.state_dict(),
        epoch=epoch,
        metrics=metrics,
        spec=worker.spec.model_dump(mode="json"),
        input_shape=tuple(worker.data.input_shape),
        num_outputs=worker.data.num_outputs,
        task=worker.data.task,
        run_id=worker.run_id,
    )


def _apply_changed_hyperparameters(
    restored: TrainState, spec: TrainSpec, optimizer: torch.optim.Optimizer, scheduler: Any
) -> None:
    """PBT restarts a trial from another trial's checkpoint with new hyperparameters: the
    spec's learning rate wins over the one saved in the optimizer state."""
    saved_lr = restored.spec["optim"]["lr"]
    if saved_lr == spec.optim.lr:
        return
    factor = spec.optim.lr / saved_lr
    for group in optimizer.param_groups:
        group["lr"] *= factor
        if "initial_lr" in group:
            group["initial_lr"] *= factor
    if hasattr(scheduler, "base_lrs"):
        scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]


def _loss(loss_fn: nn.Module, out: torch.Tensor, y: torch.Tensor, classification: bool):
    if classification:
        return loss_fn(out.float(), y)
    return loss_fn(out.float().squeeze(-1), y)


@torch.no_grad()
def _evaluate(model, batches: ShardBatches, loss_fn, classification, device, autocast_dtype):
    model.eval()
    totals = torch.zeros(3, device=device)  # loss sum, hits, rows
    for x, y in batches.epoch(0, shuffle=False):
        with _autocast(device, autocast_dtype):
            out = model(x)
        totals[0] += _loss(loss_fn, out, y, classification)
        if classification:
            totals[1] += (out.argmax(dim=1) == y).sum()
        totals[2] += len(y)
    return totals


def _autocast_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """Mixed precision applies on GPU only; on CPU it would slow these models down."""
    if device.type != "cuda" or setting == "off":
        return None
    if setting == "fp16":
        return torch.float16
    if setting == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None  # auto on a GPU without bf16: fp16 needs loss scaling, so ask for it by name


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
