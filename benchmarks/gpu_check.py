"""The GPU path, checked in one short run on a CUDA machine: deeprig's causal transformer
trained a few steps with DDP and with FSDP (deeprig's own `shard_model`), bf16 on every
GPU of the machine (NCCL; one process per GPU, plain torch.distributed, no Ray), and per
strategy a table of the step time, tokens/s, peak memory per GPU (CUDA's high-water mark,
what deeprig logs as `memory.peak_bytes.rank<r>`), the parameters each GPU holds, the
loss after the last step, and the MFU: the model's FLOPs per step (counted once, as a run
counts them: deeprig.training.flops) per second, against the GPU's bf16 dense peak (the
datasheet table a run's `mfu` divides by; a GPU not in it, a measured bf16 matmul peak).

Without a CUDA GPU it says so and exits 0 (CPU CI imports and runs it as a smoke).

    python benchmarks/gpu_check.py           # ~2-4 minutes on one GPU
    python benchmarks/gpu_check.py --quick   # a smaller model, fewer steps
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

STRATEGIES = ("ddp", "fsdp")


def gpu_peak_flops(device: torch.device) -> tuple[float, str]:
    """(bf16 FLOP/s, where the figure comes from): deeprig's datasheet table (what a run's
    `mfu` divides by); a GPU not in it, a measured bf16 matmul peak."""
    from deeprig.training.throughput import gpu_peak

    name = torch.cuda.get_device_name(device)
    peak = gpu_peak(name, "bf16")
    if peak.flops_per_s is not None:
        return peak.flops_per_s, peak.source
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    best = float("inf")
    for _ in range(5):
        torch.cuda.synchronize(device)
        started = time.perf_counter()
        a @ a
        torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best, f"{name} measured bf16 matmul"


def _model(args: argparse.Namespace) -> nn.Module:
    from deeprig.models.transformer import Transformer

    torch.manual_seed(0)
    return Transformer(
        (args.length,),
        args.vocab,
        d_model=args.d_model,
        n_heads=args.d_model // 64,
        n_layers=args.layers,
        causal=True,
        vocab_size=args.vocab,
    )


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(x)
    return nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten())


def _rank(rank: int, world: int, folder: str, args: argparse.Namespace, queue) -> None:
    from deeprig.spec.scaling import FSDPSpec
    from deeprig.training.flops import count_flops
    from deeprig.training.memory import peak_bytes
    from deeprig.training.sharding import parameters_held, shard_model

    device = torch.device("cuda", rank)
    torch.cuda.set_device(device)
    rendezvous = f"file://{folder}/rendezvous"
    dist.init_process_group("nccl", init_method=rendezvous, rank=rank, world_size=world)
    gen = torch.Generator().manual_seed(rank)
    tokens = torch.randint(0, args.vocab, (args.batch, args.length + 1), generator=gen)
    x, y = tokens[:, :-1].to(device), tokens[:, 1:].to(device)
    for strategy in STRATEGIES:
        torch.cuda.reset_peak_memory_stats(device)
        model = _model(args).to(device)
        flops = count_flops(model, x) * world if rank == 0 else 0
        autocast = strategy == "ddp"
        if strategy == "fsdp":
            units = [m for m in model.modules() if type(m).__name__ == "TransformerBlock"]
            shard_model(model, FSDPSpec(), units, torch.bfloat16, device)
            trained: nn.Module = model
        else:
            trained = nn.parallel.DistributedDataParallel(model, device_ids=[rank])
        optimizer = torch.optim.AdamW(trained.parameters(), lr=3e-4, fused=True)
        times = []
        loss = torch.zeros((), device=device)
        for _ in range(args.steps):
            torch.cuda.synchronize(device)
            started = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                loss = _loss(trained, x, y)
            loss.backward()
            nn.utils.clip_grad_norm_(trained.parameters(), 1.0)
            optimizer.step()
            torch.cuda.synchronize(device)
            times.append(time.perf_counter() - started)
        step_s = sorted(times[args.steps // 3 :])[len(times[args.steps // 3 :]) // 2]
        held, peak = parameters_held(trained), peak_bytes(device)
        if rank == 0:
            total = sum(p.numel() for p in _model(args).parameters())
            queue.put((strategy, step_s, flops, held, total, peak, float(loss)))
        del trained, model, optimizer
        torch.cuda.empty_cache()
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller model, fewer steps")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU on this machine: skipped")
        return 0
    from deeprig.training.throughput import mfu as model_flops_utilisation

    sizes = (512, 4, 8192, 512, 8) if args.quick else (1024, 12, 32000, 1024, 16)
    args.d_model, args.layers, args.vocab, args.length, args.batch = sizes
    args.steps = 8 if args.quick else args.steps
    world = torch.cuda.device_count()
    peak, peak_source = gpu_peak_flops(torch.device("cuda", 0))
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(_rank, args=(world, folder, args, queue), nprocs=world, join=True)
        rows = [queue.get() for _ in STRATEGIES]
    print(
        f"{world} GPU(s), bf16; peak {peak / 1e12:.0f} TFLOP/s per GPU ({peak_source}); "
        f"transformer d_model {args.d_model}, {args.layers} layers, vocab {args.vocab}, "
        f"{args.length} tokens x {args.batch} per GPU"
    )
    header = f"{'strategy':<9}{'params/GPU':>12}{'peak GiB':>10}{'step ms':>9}"
    print(header + f"{'tokens/s':>11}{'MFU':>7}{'loss':>8}")
    for strategy, step_s, flops, held, total, peak_mem, loss in rows:
        tokens_per_s = world * args.batch * args.length / step_s
        mfu = model_flops_utilisation(flops / step_s, peak * world)
        print(
            f"{strategy:<9}{held / 1e6:>10.1f}M{peak_mem / 2**30:>10.2f}{step_s * 1e3:>9.1f}"
            f"{tokens_per_s:>11.0f}{mfu:>7.1%}{loss:>8.3f}"
            + (f"  (of {total / 1e6:.1f}M)" if held != total else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
