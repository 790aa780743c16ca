"""Compute limit: the CNN's achieved training FLOP/s against this machine's measured
matrix-multiply peak, side by side on this machine.

- Peak: `torch.matmul` of two large square float32 matrices (2 n^3 FLOPs each), best of N,
  at 1 and at 2 torch threads.
- FLOPs of one training step of the CNN workload (train_overhead's synthetic CNN, 1x28x28,
  batch 64): counted by torch.utils.flop_counter.FlopCounterMode over forward + backward
  (convolutions and matrix multiplies; batch norm, ReLU, pooling and the optimizer are
  not counted, so achieved FLOP/s is a slight underestimate of work done).
- Achieved = FLOPs per sample x samples/s, with samples/s from a plain PyTorch loop (1
  thread) and from deeprig itself (1 worker, 1 thread: its own `samples_per_s` metric).

The figure is the fraction of the 1-thread peak each reaches (the issue sets no target):
how far from the hardware's limit the model's small convolutions run.

    python benchmarks/compute_limit.py                 # ~1.5 minutes on 2 CPUs
    python benchmarks/compute_limit.py --quick         # smoke: < 1 minute
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from deeprig.training.flops import matmul_peak  # (the peak deeprig measures for its MFU)
from harness import Row, add_epoch_options, make_console, median, print_rows, run_deeprig_train
from rich.console import Console
from scaling import cnn_spec
from train_overhead import plain_run

FIGURE = "7 compute limit"


def step_flops(spec) -> float:
    """FLOPs of one training step (forward + backward) of the spec's model on one batch."""
    from deeprig.data import describe_data
    from deeprig.models import build_model
    from torch.utils.flop_counter import FlopCounterMode

    info = describe_data(spec.data)
    model = build_model(spec.model, info.input_shape, info.num_outputs)
    x = torch.randn(spec.optim.batch_size, *info.input_shape)
    y = torch.randint(0, info.num_outputs, (spec.optim.batch_size,))
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(model(x), y).backward()
    return float(counter.get_total_flops())


def compute_rows(
    num_samples: int = 3000,
    epochs: int = 4,
    warmup: int = 2,
    repeats: int = 3,
    matmul_n: int = 2048,
    console: Console | None = None,
) -> list[Row]:
    from deeprig.cluster.session import ray_session

    console = console or Console()
    spec = cnn_spec(num_samples, epochs, 1)
    flops_per_sample = step_flops(spec) / spec.optim.batch_size
    peaks: dict[int, list[float]] = {1: [], 2: []}
    plain, deeprig = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            console.print(f"  repeat {r + 1}/{repeats}: matmul peak, plain loop")
            for threads in (1, 2):
                peaks[threads].append(matmul_peak(threads, matmul_n))
            plain.append(median(plain_run(spec, threads=1).samples_per_s[warmup:]))
        with ray_session():
            for r in range(repeats):
                console.print(f"  repeat {r + 1}/{repeats}: deeprig, 1 worker")
                run = run_deeprig_train(spec, Path(tmp), "compute")
                deeprig.append(median(run.steady("samples_per_s", warmup)))
    peak1, peak2 = median(peaks[1]), median(peaks[2])
    giga = 1e9
    note = (
        f"{flops_per_sample / 1e6:.2f} MFLOP per sample (fwd+bwd, FlopCounterMode); "
        f"matmul {matmul_n}x{matmul_n} float32, best of 5"
    )
    return [
        Row(
            FIGURE,
            "CNN training, plain loop (1 thread) vs matmul peak (1 thread)",
            "achieved GFLOP/s",
            median(plain) * flops_per_sample / giga,
            "peak GFLOP/s",
            peak1 / giga,
            None,
            repeats,
            f"{note}; {median(plain):.0f} samples/s",
        ),
        Row(
            FIGURE,
            "CNN training, deeprig 1 worker (1 thread) vs matmul peak (1 thread)",
            "achieved GFLOP/s",
            median(deeprig) * flops_per_sample / giga,
            "peak GFLOP/s",
            peak1 / giga,
            None,
            repeats,
            f"{median(deeprig):.0f} samples/s (deeprig's samples_per_s)",
        ),
        Row(
            FIGURE,
            "context: matmul peak, 2 threads vs 1",
            "2 threads GFLOP/s",
            peak2 / giga,
            "1 thread GFLOP/s",
            peak1 / giga,
            None,
            repeats,
            "the machine's ceiling for data-parallel scaling (shared with whatever else runs)",
        ),
    ]


def rows(quick: bool = False, console: Console | None = None) -> list[Row]:
    """The figures `make bench` quotes (quick: a smoke run, under a minute)."""
    if quick:
        return compute_rows(
            num_samples=1500, epochs=3, warmup=1, repeats=1, matmul_n=1024, console=console
        )
    return compute_rows(console=console)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-samples", type=int, default=3000)
    add_epoch_options(parser, epochs=4)
    parser.add_argument("--matmul-n", type=int, default=2048)
    args = parser.parse_args()
    console = make_console()
    if args.quick:
        found = rows(quick=True, console=console)
    else:
        found = compute_rows(
            args.num_samples, args.epochs, args.warmup, args.repeats, args.matmul_n, console
        )
    print_rows(found, "CNN training FLOP/s vs this machine's matmul peak", console)
    console.print(f"python {' '.join(sys.argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
