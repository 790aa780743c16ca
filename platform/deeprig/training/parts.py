"""The model and what steps it, built fresh or restored from a `TrainState`, and the
`TrainState` a rank saves of them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from deeprig.models import build_model
from deeprig.spec.train import TrainSpec
from deeprig.training.session import WorkerSession
from deeprig.training.state import TrainState
from deeprig.training.worker_config import WorkerConfig


@dataclass
class TrainParts:
    model: nn.Module  # what trains (DDP-wrapped or FSDP-sharded when world > 1)
    raw_model: nn.Module  # what is saved and evaluated (the sharded model itself)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    autocast_dtype: torch.dtype | None
    start_epoch: int
    restored: TrainState | None


def build_parts(worker: WorkerConfig, session: WorkerSession, device: torch.device) -> TrainParts:
    from deeprig.training.optim import build_optimizer, build_scheduler

    spec = worker.spec
    assert spec.model is not None  # (a spec without one runs its own loop, not this one)
    data = worker.data
    model = build_model(spec.model, data.input_shape, data.num_outputs, data.vocab_size)
    restored = session.restore()
    if restored is not None and not restored.sharded:
        restored.load_into(model, None)  # (a whole state: before the model is wrapped)
    dtype = autocast_dtype(spec.scaling.mixed_precision, device)
    if spec.scaling.strategy == "fsdp":
        model = _sharded(model, worker, session.world_size, dtype, device)
        raw_model = model
        dtype = None  # (FSDP casts the gathered parameters itself: no autocast on top)
    else:
        model = session.prepare_model(model)
        raw_model = model.module if isinstance(model, DistributedDataParallel) else model
    optimizer = build_optimizer(spec.optim, model.parameters())
    scheduler = build_scheduler(spec.optim, optimizer)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    start_epoch = 0
    if restored is not None:
        if restored.sharded:
            restored.load_into(model, optimizer)
        else:
            optimizer.load_state_dict(restored.optimizer)
        scheduler.load_state_dict(restored.scheduler)
        scaler.load_state_dict(restored.scaler)
        start_epoch = restored.next_epoch
        _apply_changed_hyperparameters(restored, spec, optimizer, scheduler)
    return TrainParts(model, raw_model, optimizer, scheduler, scaler, dtype, start_epoch, restored)


def _sharded(
    model: nn.Module,
    worker: WorkerConfig,
    world_size: int,
    dtype: torch.dtype | None,
    device: torch.device,
) -> nn.Module:
    """The model sharded over the workers (one worker: whole, there is nobody to share
    with; its checkpoints are sharded files all the same)."""
    from deeprig.training.sharding import family_units, fsdp_units, shard_model

    model = model.to(device)
    if world_size == 1:
        return model
    spec = worker.spec
    units = fsdp_units(model, spec.scaling.fsdp.shard, family_units(spec.model))
    return shard_model(model, spec.scaling.fsdp, units, dtype, device)


def train_state(
    parts: TrainParts,
    worker: WorkerConfig,
    epoch: int,
    metrics: dict[str, float],
    **position: Any,
) -> TrainState:
    """What rank 0 saves (every rank its shards, under FSDP); `position` (batches_done,
    epoch_totals, global_step, early-stop state) places it inside the run."""
    sharded = worker.spec.scaling.strategy == "fsdp"
    if sharded:  # (every rank: each saves its own shards)
        from deeprig.training.shards import sharded_state_dicts

        model_state, optimizer_state = sharded_state_dicts(parts.model, parts.optimizer)
    else:
        model_state, optimizer_state = parts.raw_model.state_dict(), parts.optimizer.state_dict()
    return TrainState(
        model=model_state,
        optimizer=optimizer_state,
        scheduler=parts.scheduler.state_dict(),
        scaler=parts.scaler.state_dict(),
        epoch=epoch,
        metrics=metrics,
        spec=worker.spec.model_dump(mode="json"),
        input_shape=tuple(worker.data.input_shape),
        num_outputs=worker.data.num_outputs,
        task=worker.data.task,
        run_id=worker.run_id,
        input_dtype=worker.data.input_dtype,
        vocab_size=worker.data.vocab_size,
        classes=worker.data.classes,
        fitted=dataclasses.asdict(worker.fitted),
        sharded=sharded,
        **position,
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


def autocast_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """Mixed precision applies on GPU only; on CPU it would slow these models down."""
    if device.type != "cuda" or setting == "off":
        return None
    if setting == "fp16":
        return torch.float16
    if setting == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None  # auto on a GPU without bf16: fp16 needs loss scaling, so ask for it by name
