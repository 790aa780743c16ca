"""The training loop: run by Ray Train on every DDP worker, or inside a Tune trial.

Every rank trains, evaluates its validation shard and reports each epoch (under Ray
Train the report is a barrier). Only rank 0 has side effects: it writes the checkpoint
and sends metrics to the sink. What it needs from its surroundings comes through a
`WorkerSession` (training/session.py).
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from deeprig.data.shard import ShardBatches
from deeprig.models import build_model
from deeprig.training.optim import build_optimizer, build_scheduler
from deeprig.training.plan import TrainPlan
from deeprig.training.session import RayTrainSession, WorkerSession


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Entry point of a Ray Train worker."""
    # Ray Train logs every report at INFO on each worker (through a logger named after its
    # source file, so only the root level catches it); progress is the driver's job.
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    run_training(config["plan"], RayTrainSession())


def run_training(plan: TrainPlan, session: WorkerSession) -> None:
    spec = plan.spec
    rank, world = session.rank, session.world_size
    torch.set_num_threads(plan.threads_per_worker)
    # Same seed on every rank: identical initial weights (DDP also broadcasts rank 0's).
    torch.manual_seed(spec.seed)
    device = session.device()
    classification = plan.data.task == "classification"

    model = build_model(spec.model, plan.data.input_shape, plan.data.num_outputs)
    state = session.restore()
    if state is not None:
        model.load_state_dict(state["model"])
    model = session.prepare_model(model)
    raw_model = model.module if isinstance(model, DistributedDataParallel) else model
    optimizer = build_optimizer(spec.optim, model.parameters())
    scheduler = build_scheduler(spec.optim, optimizer)
    autocast_dtype = _autocast_dtype(spec.scaling.mixed_precision, device)
    scaler = torch.amp.GradScaler("cuda", enabled=autocast_dtype == torch.float16)
    start_epoch = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch = state["epoch"] + 1
        _apply_changed_hyperparameters(state, spec, optimizer, scheduler)
    # Different dropout/shuffle streams per rank, reproducible per (seed, rank, epoch).
    torch.manual_seed(spec.seed * 1009 + rank + 7919 * start_epoch)

    if state is not None and start_epoch >= spec.optim.num_epochs:
        # Restored from the final checkpoint (a search resumed after its driver died):
        # nothing left to train, but the caller still needs the final metrics.
        session.report(state["metrics"], None)
        return

    label_dtype = torch.long if classification else torch.float32
    train = ShardBatches(
        session.dataset("train"),
        spec.optim.batch_size,
        device,
        label_dtype,
        plan.in_memory,
        seed=spec.seed * 31 + rank,
    )
    val = ShardBatches(
        session.dataset("val"),
        max(spec.optim.batch_size, 1024),
        device,
        label_dtype,
        plan.in_memory,
        seed=0,
    )
    if world > 1 and train.num_rows is not None:
        # DDP hangs if one rank runs more steps than another: keep the smallest shard size.
        rows = torch.tensor([train.num_rows], device=device)
        dist.all_reduce(rows, op=dist.ReduceOp.MIN)
        train.truncate(int(rows.item()))

    sink = plan.sink if rank == 0 else None
    if sink is not None and start_epoch > 0:
        sink.tag("deeprig.resumed_from_epoch", str(start_epoch))
    loss_fn = (
        nn.CrossEntropyLoss(reduction="sum") if classification else nn.MSELoss(reduction="sum")
    )

    for epoch in range(start_epoch, spec.optim.num_epochs):
        started = time.perf_counter()
        model.train()
        totals = torch.zeros(2, device=device)  # loss sum, rows
        for x, y in train.epoch(epoch, shuffle=True):
            optimizer.zero_grad(set_to_none=True)
            with _autocast(device, autocast_dtype):
                out = model(x)
                loss = _loss(loss_fn, out, y, classification) / len(y)
            scaler.scale(loss).backward()
            if spec.optim.grad_clip_norm is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), spec.optim.grad_clip_norm)
            scaler.step(optimizer)
            scaler.update()
            totals[0] += loss.detach() * len(y)
            totals[1] += len(y)
        train_seconds = time.perf_counter() - started
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()

        val_totals = _evaluate(raw_model, val, loss_fn, classification, device, autocast_dtype)
        both = torch.cat([totals, val_totals])
        if world > 1:
            dist.all_reduce(both)
        train_loss_sum, train_rows, val_loss_sum, val_hits, val_rows = both.tolist()
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
        if sink is not None:
            sink.log(metrics, step=epoch)

        last = epoch + 1 == spec.optim.num_epochs
        state = None
        if (epoch + 1) % spec.checkpoint.every_n_epochs == 0 or last:
            state = {
                "model": raw_model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": epoch,
                "metrics": metrics,
                "spec": spec.model_dump(mode="json"),
                "data": {
                    "input_shape": list(plan.data.input_shape),
                    "num_outputs": plan.data.num_outputs,
                    "task": plan.data.task,
                },
                "run_id": plan.run_id,
            }
        session.report(metrics, state)
    if sink is not None:
        sink.flush()


def _apply_changed_hyperparameters(state, spec, optimizer, scheduler) -> None:
    """PBT restarts a trial from another trial's checkpoint with new hyperparameters: the
    spec's learning rate wins over the one saved in the optimizer state."""
    saved_lr = state["spec"]["optim"]["lr"]
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
