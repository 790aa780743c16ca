"""What a sharded checkpoint costs a step, written in the step (`checkpoint.async_save:
false`) or in the background (`true`): 2 FSDP ranks over gloo (plain torch.distributed
processes, no Ray), an MLP of ~13M parameters under AdamW (a checkpoint of ~160 MB, half
per rank), a checkpoint every `--every` steps through deeprig's own shard writer
(training/shards.py), the modes interleaved `--rounds` times from the same seed.

The table: the mean step time with no checkpoints, with synchronous and with background
checkpoints, and what a checkpoint step adds to a step in each mode (its mean step time
less the no-checkpoint one, times `--every`).

    python benchmarks/async_checkpoint.py            # ~3 minutes on 2 CPUs
    python benchmarks/async_checkpoint.py --steps 12 --every 4 --width 1024   # smoke
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

MODES = ("none", "sync", "async")


def _model(width: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(256, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
        nn.Linear(width, 10),
    )


def _rank(rank: int, world: int, folder: str, args: argparse.Namespace, queue) -> None:
    from deeprig.spec.scaling import FSDPSpec
    from deeprig.training.sharding import shard_model
    from deeprig.training.shards import save_shards, sharded_state_dicts

    torch.set_num_threads(1)
    rendezvous = f"file://{folder}/rendezvous"
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world)
    measured: dict[str, list[float]] = {mode: [] for mode in MODES}
    for mode in [m for _ in range(args.rounds) for m in MODES]:  # interleaved: same load
        model = _model(args.width)
        units = [m for m in model.modules() if isinstance(m, nn.Linear)]
        shard_model(model, FSDPSpec(), units, None, torch.device("cpu"))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x, y = torch.randn(args.batch, 256), torch.randint(0, 10, (args.batch,))
        times = []
        written = None
        for step in range(1, args.steps + 1):
            dist.barrier()
            started = time.perf_counter()
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            if mode != "none" and step % args.every == 0:
                model_state, optimizer_state = sharded_state_dicts(model, optimizer)
                target = Path(tempfile.mkdtemp(prefix=f"{mode}-{step}-rank{rank}-", dir=folder))
                written = save_shards(model_state, optimizer_state, target, mode == "async")
            times.append(time.perf_counter() - started)
        if written is not None:
            written.result()
        measured[mode] += times[args.every :]  # (the first steps warm up)
    if rank == 0:
        queue.put(measured)
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--every", type=int, default=5, help="steps between checkpoints")
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each mode, interleaved")
    args = parser.parse_args()
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(_rank, args=(2, folder, args, queue), nprocs=2, join=True)
        results = queue.get()
        size = sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())
        checkpoints = 2 * args.rounds * (args.steps // args.every)
    base = sum(results["none"]) / len(results["none"])
    params = sum(p.numel() for p in _model(args.width).parameters())
    print(
        f"2 FSDP ranks (gloo, 1 thread each), MLP of {params / 1e6:.1f}M parameters, batch "
        f"{args.batch}, a checkpoint every {args.every} steps "
        f"(~{size / checkpoints / 1e6:.0f} MB each), {os.cpu_count()} CPUs"
    )
    print(f"{'checkpoints':<12} {'step ms':>8} {'vs none':>8} {'per checkpoint ms':>18}")
    for mode in MODES:
        mean = sum(results[mode]) / len(results[mode])
        per_checkpoint = (mean - base) * args.every
        print(f"{mode:<12} {mean * 1e3:>8.1f} {mean / base:>7.2f}x {per_checkpoint * 1e3:>18.1f}")


if __name__ == "__main__":
    main()
