"""Data-parallel scaling: deeprig train with 1 worker against 2 workers on a compute-heavy
model (the synthetic CNN, 1x28x28 images), in samples/s, side by side on this machine.

Throughput is deeprig's own `samples_per_s` metric (all ranks' training rows over rank 0's
training seconds, read back from each epoch's checkpoint), median over the steady epochs,
then over `--repeats` runs of each side (interleaved). deeprig budgets the CPUs itself
(cluster/resources.py); on 2 CPUs it keeps 1 for Ray Data and gives each of 2 workers
0.5 CPU and one torch thread. The batch size is per worker, as in DDP, so 2 workers take
a global batch twice as large. Ray is started once for all runs: start-up is not part of
samples/s. Context rows: the same throughput over whole epochs (train + validation +
report), what this machine's 2 cores give a plain loop at 2 torch threads, and the DDP
floor: plain `torch.distributed` processes, no Ray (benchmarks/floors/plain_ddp.py), with
the gradient all-reduce's share of a step.

Where CUDA is available: deeprig 1 GPU worker against the plain loop on the same GPU.

    python benchmarks/scaling.py                 # ~2 minutes on 2 CPUs
    python benchmarks/scaling.py --quick         # smoke: < 1 minute

Target (issue 15): 2 workers >= 1.6x the samples/s of 1 worker on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from harness import (
    Row,
    Target,
    add_epoch_options,
    make_console,
    median,
    print_rows,
    run_deeprig_train,
)
from rich.console import Console
from train_overhead import plain_run, spec_for

FIGURE = "2 scaling"
WORKLOAD = "synthetic-cnn"


def cnn_spec(num_samples: int, epochs: int, workers: int, extra: tuple[str, ...] = ()):
    return spec_for(
        WORKLOAD,
        epochs,
        [f"data.num_samples={num_samples}", f"scaling.num_workers={workers}", *extra],
    )


def budget_note(workers: int) -> str:
    from deeprig.cluster.resources import budget_workers, local_resources

    spec = cnn_spec(1000, 1, workers)
    budget = budget_workers(spec.scaling, local_resources())
    return (
        f"{workers} worker(s) x {budget.cpus_per_worker:g} CPU, "
        f"{budget.threads_per_worker} torch thread(s) each"
    )


def scaling_rows(
    num_samples: int = 6000,
    epochs: int = 5,
    warmup: int = 2,
    repeats: int = 3,
    console: Console | None = None,
) -> list[Row]:
    from deeprig.cluster.session import ray_session

    console = console or Console()
    runs: dict[int, list] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp, ray_session():
        for r in range(repeats):
            for workers in (1, 2) if r % 2 == 0 else (2, 1):
                console.print(f"  repeat {r + 1}/{repeats}: deeprig, {workers} worker(s)")
                spec = cnn_spec(num_samples, epochs, workers)
                runs[workers].append(run_deeprig_train(spec, Path(tmp), f"{workers}w"))

    def throughput(workers: int) -> float:
        return median(median(run.steady("samples_per_s", warmup)) for run in runs[workers])

    def whole_epoch(workers: int) -> float:
        spec = cnn_spec(num_samples, epochs, workers)
        from deeprig.data import describe_data

        rows_per_epoch = describe_data(spec.data).num_train
        return median(rows_per_epoch / median(run.steady_gaps(warmup)) for run in runs[workers])

    # The hardware's own ceiling for this model on these 2 cores, no Ray: one process with
    # 2 intra-op threads against 1 (same data, model and batch as one worker).
    console.print("  plain PyTorch loop, 1 then 2 threads")
    plain_spec = cnn_spec(num_samples, max(3, warmup + 1), 1)
    plain = {t: plain_run(plain_spec, threads=t) for t in (1, 2)}
    torch.set_num_threads(1)
    # What DDP itself gets from the second core, no Ray: plain torch.distributed processes.
    console.print("  plain DDP (gloo), 1 then 2 processes")
    from floors.plain_ddp import measure as plain_ddp

    ddp = {n: plain_ddp(n, num_samples) for n in (1, 2)}
    setting = f"{num_samples} rows, batch 64 per worker, epochs {warmup + 1}-{epochs}"
    rows = [
        Row(
            FIGURE,
            "CNN 1x28x28: deeprig samples_per_s, 2 workers vs 1",
            "2 workers samples/s",
            throughput(2),
            "1 worker samples/s",
            throughput(1),
            Target(">=", 1.6),
            repeats,
            f"{setting}; {budget_note(1)}; {budget_note(2)}",
        ),
        Row(
            FIGURE,
            "CNN 1x28x28: whole epochs (train+val+report), 2 workers vs 1",
            "2 workers rows/s",
            whole_epoch(2),
            "1 worker rows/s",
            whole_epoch(1),
            None,
            repeats,
            "training rows over the wall time between epoch ends",
        ),
        Row(
            FIGURE,
            "context: plain PyTorch loop, 2 torch threads vs 1 (no Ray)",
            "2 threads samples/s",
            median(plain[2].samples_per_s[1:]),
            "1 thread samples/s",
            median(plain[1].samples_per_s[1:]),
            None,
            1,
            "what one process gets from the second core for this model",
        ),
        Row(
            FIGURE,
            "floor: plain DDP (gloo), 2 processes vs 1 (no Ray)",
            "2 processes samples/s",
            ddp[2].samples_per_s,
            "1 process samples/s",
            ddp[1].samples_per_s,
            None,
            1,
            f"same CNN, data and batch per process, 1 thread each (benchmarks/floors/"
            f"plain_ddp.py); 2 processes: step {ddp[2].step_ms:.1f} ms, of it the gradient "
            f"all-reduce {ddp[2].allreduce_ms:.1f} ms",
        ),
    ]
    if torch.cuda.is_available():
        rows.append(gpu_row(num_samples, epochs, warmup, repeats, console))
    return rows


def gpu_row(num_samples: int, epochs: int, warmup: int, repeats: int, console: Console) -> Row:
    """1 GPU: deeprig (1 GPU worker) against the plain loop on the same GPU."""
    from deeprig.cluster.session import ray_session

    spec = cnn_spec(num_samples, epochs, 1, ("scaling.use_gpu=true",))
    deeprig, plain = [], []
    with tempfile.TemporaryDirectory() as tmp, ray_session():
        for r in range(repeats):
            console.print(f"  GPU repeat {r + 1}/{repeats}: plain, deeprig")
            plain.append(plain_run(spec, threads=1, device="cuda"))
            deeprig.append(run_deeprig_train(spec, Path(tmp), "gpu"))
    return Row(
        FIGURE,
        f"1 GPU ({torch.cuda.get_device_name(0)}): deeprig vs plain PyTorch",
        "deeprig samples/s",
        median(median(d.steady("samples_per_s", warmup)) for d in deeprig),
        "plain samples/s",
        median(median(p.samples_per_s[warmup:]) for p in plain),
        None,
        repeats,
        "same model, data and batch on the same GPU",
    )


def rows(quick: bool = False, console: Console | None = None) -> list[Row]:
    """The figures `make bench` quotes (quick: a smoke run, under a minute)."""
    if quick:
        return scaling_rows(num_samples=1500, epochs=3, warmup=1, repeats=1, console=console)
    return scaling_rows(console=console)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-samples", type=int, default=6000)
    add_epoch_options(parser)
    args = parser.parse_args()
    console = make_console()
    if args.quick:
        found = rows(quick=True, console=console)
    else:
        found = scaling_rows(args.num_samples, args.epochs, args.warmup, args.repeats, console)
    print_rows(found, "data-parallel scaling: deeprig 2 workers vs 1", console)
    console.print(f"python {' '.join(sys.argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
