"""Memory a run can see, each epoch: the parameters every rank holds (all of them under
DDP, its shards under FSDP) and every rank's peak memory (CUDA's high-water mark of
allocated bytes on a GPU, the process's resident high-water mark on CPU)."""

from __future__ import annotations

import resource
import sys

import torch
import torch.distributed as dist
from torch import nn

from deeprig.training.sharding import parameters_held


def memory_metrics(model: nn.Module, world_size: int, device: torch.device) -> dict[str, float]:
    """`memory.params_held.rank<r>` and `memory.peak_bytes.rank<r>` of every rank (every
    rank calls it: the figures are gathered), and `model.parameters`, the model's count."""
    mine = torch.tensor([float(parameters_held(model)), float(peak_bytes(device))], device=device)
    every = [mine.clone() for _ in range(world_size)]
    if world_size > 1:
        dist.all_gather(every, mine)
    metrics = {}
    for rank, (held, peak) in enumerate(t.tolist() for t in every):
        metrics[f"memory.params_held.rank{rank}"] = held
        metrics[f"memory.peak_bytes.rank{rank}"] = peak
    metrics["model.parameters"] = float(_parameter_count(model))
    return metrics


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    # ru_maxrss: kilobytes on Linux, bytes on macOS
    high_water = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return high_water if sys.platform == "darwin" else high_water * 1024


def _parameter_count(model: nn.Module) -> int:
    """Every parameter's full size, sharded or not."""
    return sum(p.numel() for p in model.parameters())
