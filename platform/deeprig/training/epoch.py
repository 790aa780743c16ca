"""One pass over a worker's shard: micro-batches, gradient accumulation, the divergence
guard, and a call after every optimiser step (where the loop's components take step
metrics and mid-epoch checkpoints: training/step_metrics.py, training/checkpointer.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import FSDPModule
from torch.nn.parallel import DistributedDataParallel

from deeprig.data.shard import ShardBatches
from deeprig.training.guards import NonFiniteLoss


@dataclass
class Position:
    """Where training is: the epoch, the micro-batches of it done, the optimiser steps."""

    epoch: int
    batches_done: int = 0
    global_step: int = 0
    steps_in_epoch: int = 0  # optimiser steps of this epoch (counted from its start)
    # The epoch's running (loss sum, rows) on this rank.
    totals: torch.Tensor = field(default_factory=lambda: torch.zeros(2))
    # Rows of this epoch trained before a resume inside it, over every rank: in its loss,
    # not in its throughput.
    rows_before: float = 0.0


@dataclass(frozen=True)
class StepParts:
    """What one optimiser step uses."""

    model: nn.Module  # DDP-wrapped or FSDP-sharded when world > 1
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module  # reduction="sum"
    classification: bool
    autocast_dtype: torch.dtype | None
    accumulate_steps: int
    grad_clip_norm: float | None
    world_size: int
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None  # train batches only


# Called after every optimiser step with the position and the step's mean loss (a tensor:
# reading it syncs a GPU, so only a caller that logs it pays that).
AfterStep = Callable[[Position, torch.Tensor], None]


def train_epoch(
    parts: StepParts, train: ShardBatches, position: Position, after_step: AfterStep
) -> torch.Tensor:
    """Train on this rank's shard from `position` to the epoch's end; adds (loss sum, rows)
    to `position.totals` and returns it. `accumulate_steps` micro-batches make one optimiser
    step (gradients are averaged over the ranks on the last of them only: DDP's `no_sync`,
    FSDP's `set_requires_gradient_sync`); the epoch's last micro-batch ends its group. A
    non-finite loss on any rank stops every rank at the same micro-batch (NonFiniteLoss):
    one tiny all-reduce each, overlapped with the backward, is the price of never leaving
    a rank waiting in the next gradient all-reduce."""
    model, optimizer = parts.model, parts.optimizer
    model.train()
    pending = 0  # micro-batches whose gradients wait for the next optimiser step
    totals = position.totals
    step_loss = torch.zeros((), device=totals.device)
    skip = position.batches_done
    batches = train.epoch(position.epoch, shuffle=True, skip_batches=skip)
    for (x, y), last in _marking_last(batches):
        if pending == 0:
            optimizer.zero_grad(set_to_none=True)
            step_loss.zero_()
        pending += 1
        if parts.augment is not None:
            x = parts.augment(x)
        syncs = pending == parts.accumulate_steps or last
        with _gradient_sync(model, syncs), autocast(x.device, parts.autocast_dtype):
            out = model(x)
            loss = loss_of(parts.loss_fn, out, y, parts.classification) / len(y)
            finite = _all_finite(loss, parts.world_size)
            parts.scaler.scale(loss / parts.accumulate_steps).backward()
        _stop_if_not_finite(finite, position)
        step_loss += loss.detach() / parts.accumulate_steps
        totals[0] += loss.detach() * len(y)
        totals[1] += len(y)
        position.batches_done += 1
        if syncs:
            if pending < parts.accumulate_steps:  # the epoch's last, partial group
                _scale_gradients(parts.model, parts.accumulate_steps / pending)
                step_loss *= parts.accumulate_steps / pending
            _optimizer_step(parts)
            _advance(position, step_loss, after_step)
            pending = 0
    return totals


def _marking_last(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
) -> Iterator[tuple[tuple[torch.Tensor, torch.Tensor], bool]]:
    """Each batch with whether it is the epoch's last (read one batch ahead)."""
    iterator = iter(batches)
    current = next(iterator, None)
    while current is not None:
        following = next(iterator, None)
        yield current, following is None
        current = following


def _advance(position: Position, loss: torch.Tensor, after_step: AfterStep) -> None:
    position.global_step += 1
    position.steps_in_epoch += 1
    after_step(position, loss)


def _optimizer_step(parts: StepParts) -> None:
    if parts.grad_clip_norm is not None:
        parts.scaler.unscale_(parts.optimizer)
        # (sharded parameters: the norm is the global one, over every rank's shards)
        nn.utils.clip_grad_norm_(parts.model.parameters(), parts.grad_clip_norm)
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()


def _scale_gradients(model: nn.Module, scale: float) -> None:
    """A partial group's gradients made a mean over its own micro-batches."""
    for param in model.parameters():
        if param.grad is not None:
            param.grad *= scale


def _all_finite(loss: torch.Tensor, world_size: int) -> tuple[torch.Tensor, Any]:
    """Whether every rank's loss is finite: (the flag, the all-reduce still running).

    Started before the backward and waited for after it, so the tiny all-reduce overlaps
    the backward instead of holding every rank at a barrier each step (the gradient
    all-reduce follows it in the same order on every rank). Waiting before the backward
    cost 2 DDP workers ~10% of their samples/s on 2 CPUs (benchmarks/scaling.py)."""
    finite = torch.isfinite(loss.detach()).float()
    if world_size == 1:
        return finite, None
    return finite, dist.all_reduce(finite, op=dist.ReduceOp.MIN, async_op=True)


def _stop_if_not_finite(check: tuple[torch.Tensor, Any], position: Position) -> None:
    """Raise on every rank at the same micro-batch, before its optimiser step."""
    finite, running = check
    if running is not None:
        running.wait()
    if finite.item() < 1:
        raise NonFiniteLoss(position.epoch, position.batches_done)


def _gradient_sync(model: nn.Module, syncs: bool) -> Any:
    """Gradients averaged over the ranks in this backward only when it `syncs`."""
    if isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(syncs)
        return contextlib.nullcontext()
    if syncs or not isinstance(model, DistributedDataParallel):
        return contextlib.nullcontext()
    return model.no_sync()


def loss_of(loss_fn: nn.Module, out: torch.Tensor, y: torch.Tensor, classification: bool):
    """The summed loss of a batch, in float32 whatever the autocast dtype."""
    if classification:
        return loss_fn(out.float(), y)
    return loss_fn(out.float().squeeze(-1), y)


def autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
