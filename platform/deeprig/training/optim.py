"""Optimizer and learning-rate schedule from the spec, with torch's own building blocks."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    SequentialLR,
    StepLR,
)

from deeprig.spec.optim import OptimSpec


def build_optimizer(spec: OptimSpec, params) -> torch.optim.Optimizer:
    if spec.name == "sgd":
        return torch.optim.SGD(
            params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay
        )
    if spec.name == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)


def build_scheduler(spec: OptimSpec, optimizer: torch.optim.Optimizer) -> LRScheduler:
    """Stepped once per epoch: warm-up (linear from lr/10), then none, step or cosine."""
    sched = spec.schedule
    warmup = sched.warmup_epochs
    remaining = spec.num_epochs - warmup
    if sched.name == "step":
        main: LRScheduler = StepLR(optimizer, step_size=sched.step_size, gamma=sched.gamma)
    elif sched.name == "cosine":
        main = CosineAnnealingLR(optimizer, T_max=max(1, remaining), eta_min=sched.min_lr)
    else:
        main = ConstantLR(optimizer, factor=1.0, total_iters=0)
    if warmup == 0:
        return main
    ramp = LinearLR(optimizer, start_factor=0.1, end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, [ramp, main], milestones=[warmup])
