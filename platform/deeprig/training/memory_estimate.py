"""What one training worker's tensors will take, before anything runs: parameters,
gradients, optimizer state and the activations one batch keeps for its backward pass,
under `ddp` (every worker holds the whole model) and `fsdp` (parameters, gradients and
optimizer state divided by the workers, plus the largest unit's parameters gathered whole
for its forward and backward).

Activations are measured, not guessed: the tensors autograd saves for backward during one
forward (`torch.autograd.graph.saved_tensors_hooks`), each storage counted once and the
parameters left out. The forward runs on the meta device over a whole batch (no memory, no
arithmetic); a network whose forward reads its data (a padding mask it tests, say) cannot
run there, so it runs once on CPU over one sample and the bytes are scaled by the batch:
only for a model whose parameters the driver can hold easily (CPU_SAMPLE_MAX_BYTES); a
bigger one's activations are left unmeasured, and said to be.
Everything is float32 as built: mixed precision keeps less, so this is an upper bound of the
model's own tensors; the process around them (torch, Ray's worker) is not in it."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

Strategy = Literal["ddp", "fsdp"]

# The largest model built for real to measure its activations on one sample.
CPU_SAMPLE_MAX_BYTES = 2 * 1024**3

# Tensors each optimizer keeps per parameter: Adam's two moments; SGD's momentum buffer,
# none without momentum.
OPTIMIZER_STATES: dict[str, Callable[[float], int]] = {
    "adamw": lambda momentum: 2,
    "adam": lambda momentum: 2,
    "sgd": lambda momentum: 1 if momentum > 0 else 0,
}


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of the whole model's tensors; `per_worker` splits them by strategy."""

    parameters: int
    gradients: int
    optimizer: int
    activations: int | None  # one batch of `batch_size` rows on one worker; None: unmeasured
    largest_unit: int  # the parameters of the biggest FSDP unit (the root's own, if bigger)
    batch_size: int

    def per_worker(self, strategy: Strategy, workers: int) -> int:
        state = self.parameters + self.gradients + self.optimizer
        activations = self.activations or 0
        if strategy == "ddp" or workers == 1:
            return state + activations
        return math.ceil(state / workers) + self.largest_unit + activations


def estimate_memory(
    model: nn.Module,
    sample: torch.Tensor,
    batch_size: int,
    units: list[nn.Module],
    optimizer: str,
    momentum: float = 0.0,
) -> MemoryEstimate:
    """`model` built on the meta device (or CPU), `sample` one input row of its kind
    (without a batch dimension), `units` the modules FSDP would shard on their own."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    parameters = sum(_nbytes(p) for p in model.parameters())
    gradients = sum(_nbytes(p) for p in trainable)
    optimizer_bytes = OPTIMIZER_STATES[optimizer](momentum) * gradients
    in_units = {id(p) for unit in units for p in unit.parameters()}
    root_own = sum(_nbytes(p) for p in model.parameters() if id(p) not in in_units)
    unit_sizes = [sum(_nbytes(p) for p in unit.parameters()) for unit in units]
    return MemoryEstimate(
        parameters=parameters,
        gradients=gradients,
        optimizer=optimizer_bytes,
        activations=activation_bytes(model, sample, batch_size),
        largest_unit=max([root_own, *unit_sizes]),
        batch_size=batch_size,
    )


def activation_bytes(model: nn.Module, sample: torch.Tensor, batch_size: int) -> int | None:
    """What one forward over `batch_size` rows saves for backward; None when it would take
    building a model over CPU_SAMPLE_MAX_BYTES."""
    on_meta = any(p.is_meta for p in model.parameters())
    if on_meta:
        batch = sample.to("meta").unsqueeze(0).expand(batch_size, *sample.shape).contiguous()
        try:
            return _saved_bytes(model, batch)
        except (RuntimeError, NotImplementedError):  # the forward reads its data
            if sum(_nbytes(p) for p in model.parameters()) > CPU_SAMPLE_MAX_BYTES:
                return None
            model = model.to_empty(device="cpu")
    return _saved_bytes(model, sample.to("cpu").unsqueeze(0)) * batch_size


def _saved_bytes(model: nn.Module, batch: torch.Tensor) -> int:
    # (a saved weight is often a view, its transpose: storages tell it apart; views share
    # their storage, and a meta storage has no address, only its handle)
    parameters = {p.untyped_storage()._cdata for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in parameters and tensor.is_floating_point():
            storages[storage._cdata] = storage.nbytes()
        return tensor

    was_training = model.training
    model.train()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model(batch)
    finally:
        model.train(was_training)
    return sum(storages.values())


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def fitting_workers(
    estimate: MemoryEstimate, limit: Callable[[int], float], start: int, most: int = 4096
) -> int | None:
    """The fewest workers from `start` on whose `fsdp` share fits `limit(workers)` bytes a
    worker, or None when none up to `most` does (activations alone too big)."""
    for workers in range(max(start, 2), most + 1):
        if estimate.per_worker("fsdp", workers) <= limit(workers):
            return workers
    return None


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
