"""`scaling.strategy: fsdp`: the model's FSDP units, sharded with FSDP2 (`fully_shard` on
each unit, then on the root) over the workers' process group.

Each unit's parameters, gradients and optimizer state live as shards (DTensors) on the
ranks; a unit's forward and backward gather its parameters for as long as they run. One
worker has nothing to shard with: the model trains whole (checkpoints are still sharded
files, so a job can resume on more workers)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.checkpoint import checkpoint

from deeprig.spec.scaling import FSDPSpec

# `shard: auto` on a model with no blocks of its own (a custom one, an MLP): each direct
# child holding more parameters than this is a unit; the rest stay with the root.
AUTO_UNIT_MIN_PARAMS = 100_000


def fsdp_units(
    model: nn.Module, shard: str | list[str], family_units: tuple[type[nn.Module], ...] | None
) -> list[nn.Module]:
    """The modules sharded on their own (the root is sharded last, with whatever
    parameters no unit holds). `family_units`: the classes a built-in family names as its
    units (models/registry.py), None for a user's network."""
    if shard == "auto" and family_units is not None:
        return _outermost(m for m in model.modules() if isinstance(m, family_units))
    if shard == "auto":
        return [
            child
            for child in model.children()
            if sum(p.numel() for p in child.parameters()) > AUTO_UNIT_MIN_PARAMS
        ]
    named = set(shard)
    return _outermost(m for m in model.modules() if type(m).__name__ in named and m is not model)


def family_units(model_config: object) -> tuple[type[nn.Module], ...] | None:
    """The FSDP units a built-in family declares on its row of the architecture table."""
    from deeprig.models.registry import ARCHITECTURES

    return ARCHITECTURES[type(model_config)].shard_units


def module_class_names(model: nn.Module) -> set[str]:
    """The class names `fsdp.shard` may name: every module class inside the model."""
    return {type(m).__name__ for m in model.modules() if m is not model}


def _outermost(modules: Iterable[nn.Module]) -> list[nn.Module]:
    """Named units nested in another named unit are left to it (FSDP2 shards a parameter
    once, with the innermost `fully_shard` that holds it)."""
    chosen: list[nn.Module] = []
    for module in modules:
        if not any(module in set(outer.modules()) for outer in chosen):
            chosen.append(module)
    return chosen


def shard_model(
    model: nn.Module,
    fsdp: FSDPSpec,
    units: list[nn.Module],
    param_dtype: torch.dtype | None,
    device: torch.device,
) -> nn.Module:
    """`fully_shard` on each unit, then on the root, in place; the model must already be on
    `device`. `param_dtype` (mixed precision on a GPU): the gathered parameters' dtype,
    gradients reduced in float32."""
    from torch.distributed.fsdp import (
        CPUOffloadPolicy,
        MixedPrecisionPolicy,
        OffloadPolicy,
        fully_shard,
    )

    mesh = _mesh(device)
    precision = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    offload = CPUOffloadPolicy() if fsdp.cpu_offload else OffloadPolicy()
    for unit in units:
        if fsdp.activation_checkpointing:
            _recompute_in_backward(unit)
        fully_shard(
            unit,
            mesh=mesh,
            reshard_after_forward=fsdp.reshard_after_forward,
            mp_policy=precision,
            offload_policy=offload,
        )
    # (the root's parameters are gathered until the backward ends: resharding them after
    # the forward would gather them again at once)
    fully_shard(model, mesh=mesh, mp_policy=precision, offload_policy=offload)
    return model


def _mesh(device: torch.device):
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(device.type, (dist.get_world_size(),))


def _recompute_in_backward(unit: nn.Module) -> None:
    """The unit's activations are not kept: its backward runs its forward again. (The
    forward is replaced on the instance, so parameter names and checkpoints stay the same.)"""
    forward = unit.forward
    unit.forward = functools.partial(checkpoint, forward, use_reentrant=False)


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def reshard(model: nn.Module) -> None:
    """Free every gathered parameter: after a forward with no backward (validation) the
    root keeps its parameters whole until the next step otherwise."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def parameters_held(model: nn.Module) -> int:
    """The parameter elements this rank holds (its shards under FSDP, all under DDP)."""
    from torch.distributed.tensor import DTensor

    return sum(
        p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in model.parameters()
    )


def lockstep(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """A sharded model's forward is a collective: every rank runs as many as every other.
    A rank whose shard ran out while another's has batches left runs the forward on an
    empty batch (no rows: it adds nothing to the sums)."""
    iterator = iter(batches)
    empty: tuple[torch.Tensor, torch.Tensor] | None = None
    while True:
        batch = next(iterator, None)
        more = torch.tensor([0.0 if batch is None else 1.0], device=device)
        dist.all_reduce(more, op=dist.ReduceOp.MAX)
        if more.item() == 0:
            return
        if batch is not None:
            x, y = batch
            empty = (x[:0], y[:0])
            yield batch
        else:
            assert empty is not None, "an empty validation shard next to a sharded model"
            yield empty
