"""The floor for the sharding figures: the transformer of benchmarks/sharding.py trained by
plain PyTorch in 2 processes over gloo (torch.multiprocessing, no Ray, none of deeprig's
loop, data or wrapping: only its network class, so both sides run the same model), one
torch thread each, either way:

- ddp: `DistributedDataParallel` around the whole model;
- fsdp: FSDP2, `fully_shard` on each transformer block, then on the root.

Each rank trains on its own random rows (the same per-rank batch as a deeprig worker),
times every step, and after the first step counts the bytes it holds of the parameters,
their gradients and the optimizer's state (a sharded tensor counts its local shard,
`DTensor.to_local()`). The figures: rank 0's mean step time over the steps after the
warm-up, every rank's bytes and resident high-water mark (ru_maxrss).

    python benchmarks/floors/plain_sharding.py          # both ways, ~1 minute on 2 CPUs
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn


@dataclass(frozen=True)
class ModelSize:
    d_model: int = 768
    n_heads: int = 12
    n_layers: int = 8
    ff_mult: int = 4
    steps: int = 16  # sequence length
    features: int = 32  # per step
    classes: int = 10

    def build(self) -> nn.Module:
        from deeprig.models.transformer import Transformer

        return Transformer(
            (self.steps, self.features),
            self.classes,
            d_model=self.d_model,
            n_heads=self.n_heads,
            n_layers=self.n_layers,
            ff_mult=self.ff_mult,
        )


@dataclass(frozen=True)
class PlainRun:
    strategy: str
    step_s: float  # rank 0's mean step time after the warm-up
    state_bytes: list[int]  # per rank: parameters + gradients + optimizer state held
    peak_rss: list[int]  # per rank: resident high-water mark, bytes


def held_bytes(tensor: torch.Tensor) -> int:
    from torch.distributed.tensor import DTensor

    local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
    return local.numel() * local.element_size()


def state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Parameters, gradients and optimizer state this rank holds (its shards under FSDP)."""
    total = 0
    for param in model.parameters():
        total += held_bytes(param)
        if param.grad is not None:
            total += held_bytes(param.grad)
    for state in optimizer.state.values():
        total += sum(held_bytes(v) for v in state.values() if isinstance(v, torch.Tensor))
    return total


def _rank(rank: int, world: int, strategy: str, size: ModelSize, args, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world
    )
    torch.manual_seed(0)
    model = size.build()
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
    else:
        model = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(1 + rank)
    rows = args.batch * args.steps
    x = torch.randn(rows, size.steps, size.features, generator=gen)
    y = torch.randint(0, size.classes, (rows,), generator=gen)
    times, held = [], 0
    for step in range(args.steps):
        batch = slice(step * args.batch, (step + 1) * args.batch)
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
        if step == 0:
            held = state_bytes(model, optimizer)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    steady = times[args.warmup :]
    mine = torch.tensor([float(held), float(peak), sum(steady) / len(steady)], dtype=torch.float64)
    every = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(every, mine)
    if rank == 0:
        torch.save([t.tolist() for t in every], Path(folder) / "result.pt")
    dist.destroy_process_group()


def measure(strategy: str, size: ModelSize, batch: int, steps: int, warmup: int) -> PlainRun:
    args = argparse.Namespace(batch=batch, steps=steps, warmup=warmup)
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(_rank, args=(2, strategy, size, args, folder), nprocs=2, join=True)
        every = torch.load(Path(folder) / "result.pt")
    return PlainRun(
        strategy,
        step_s=every[0][2],
        state_bytes=[int(r[0]) for r in every],
        peak_rss=[int(r[1]) for r in every],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="rows per rank and step")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    size = ModelSize()
    print(f"{sum(p.numel() for p in size.build().parameters()) / 1e6:.1f}M parameters")
    for strategy in ("ddp", "fsdp"):
        run = measure(strategy, size, args.batch, args.steps, args.warmup)
        print(
            f"{strategy}: step {run.step_s * 1e3:.0f} ms, state "
            f"{[f'{b / 2**20:.0f} MiB' for b in run.state_bytes]}, peak RSS "
            f"{[f'{b / 2**20:.0f} MiB' for b in run.peak_rss]}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
