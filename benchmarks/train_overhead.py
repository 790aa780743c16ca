"""Train overhead: `deeprig run` with 1 worker against a plain PyTorch loop, side by side.

Same model (built from the same spec), same data (the same rows, already in memory), same
batch size, same optimizer, one torch thread on both sides. Both run training plus a
validation pass every epoch. deeprig's epoch is measured as the wall time between
consecutive epoch ends on rank 0 (MLflow metric timestamps), so it includes everything
deeprig adds per epoch: Ray Train's report, the checkpoint, the MLflow logging.

    python benchmarks/train_overhead.py                 # all workloads, ~4 minutes on 2 CPUs
    python benchmarks/train_overhead.py --only digits-cnn --epochs 10

Target (issue 2): steady-state epoch ratio <= 1.10.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from deeprig.data import describe_data
from deeprig.data.builtin import builtin_arrays, split_indices
from deeprig.models import build_model
from deeprig.spec import load_spec_text
from deeprig.training.optim import build_optimizer
from rich.console import Console
from rich.table import Table

WORKLOADS = {
    # Tiny: an epoch is ~0.1 s, so deeprig's fixed per-epoch cost (report, checkpoint,
    # logging) shows at its largest here.
    "digits-cnn": """
        model: {name: cnn, channels: [16, 32]}
        data: {source: "builtin:digits"}
        optim: {batch_size: 32}""",
    "synthetic-mlp": """
        model: {name: mlp, hidden: [512, 256]}
        data: {source: "builtin:synthetic", num_samples: 60000, shape: [256], num_classes: 10}
        optim: {batch_size: 128}""",
    "synthetic-cnn": """
        model: {name: cnn, channels: [16, 32]}
        data: {source: "builtin:synthetic", num_samples: 12000, shape: [1, 28, 28],
               num_classes: 10}
        optim: {batch_size: 64}""",
    "synthetic-lstm": """
        model: {name: lstm, hidden_size: 128}
        data: {source: "builtin:synthetic", num_samples: 12000, shape: [32, 16],
               num_classes: 10}
        optim: {batch_size: 64}""",
}


def spec_for(name: str, epochs: int):
    import textwrap

    body = textwrap.dedent(WORKLOADS[name]).strip()
    text = f"name: bench-{name}\nkind: train\nseed: 0\n{body}\n"
    return load_spec_text(
        text,
        [f"optim.num_epochs={epochs}", "scaling.num_workers=1", "tracking.experiment=benchmarks"],
    )


def plain_epoch_times(spec) -> list[float]:
    """The loop a person would write by hand: tensors in memory, shuffled each epoch."""
    torch.set_num_threads(1)
    torch.manual_seed(spec.seed)
    info = describe_data(spec.data)
    x, y = builtin_arrays(spec.data, spec.seed)
    train_idx, val_idx = split_indices(len(y), spec.data.val_fraction, spec.seed)
    x_train, y_train = torch.as_tensor(x[train_idx]), torch.as_tensor(y[train_idx])
    x_val, y_val = torch.as_tensor(x[val_idx]), torch.as_tensor(y[val_idx])
    model = build_model(spec.model, info.input_shape, info.num_outputs)
    optimizer = build_optimizer(spec.optim, model.parameters())
    loss_fn = torch.nn.CrossEntropyLoss()
    batch = spec.optim.batch_size
    times = []
    for _ in range(spec.optim.num_epochs):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(y_train))
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            for i in range(0, len(y_val), 1024):
                out = model(x_val[i : i + 1024])
                loss_fn(out, y_val[i : i + 1024]).item()
        times.append(time.perf_counter() - started)
    return times


def deeprig_epoch_times(spec, home: Path) -> tuple[list[float], list[float], float]:
    """Epoch wall times of a real `deeprig run` (tracking on, checkpoint every epoch)."""
    from deeprig.runners.train import run_train
    from mlflow import MlflowClient

    started = time.perf_counter()
    outcome = run_train(
        spec,
        spec_text="(benchmark)",
        spec_path=Path("bench.yaml"),
        console=Console(quiet=True),
        home=home,
    )
    total = time.perf_counter() - started
    client = MlflowClient(outcome.tracking_uri)
    history = sorted(client.get_metric_history(outcome.run_id, "epoch"), key=lambda m: m.step)
    stamps = [m.timestamp / 1000 for m in history]
    in_loop = [
        m.value
        for m in sorted(
            client.get_metric_history(outcome.run_id, "epoch_time_s"), key=lambda m: m.step
        )
    ]
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)], in_loop, total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", choices=sorted(WORKLOADS))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2, help="epochs left out of the median")
    args = parser.parse_args()
    names = args.only or list(WORKLOADS)
    console = Console()
    table = Table(title="deeprig (1 worker) vs plain PyTorch, steady-state epoch, 1 thread each")
    for column in (
        "workload",
        "plain s/epoch",
        "deeprig s/epoch",
        "ratio",
        "deeprig in-loop",
        "deeprig end-to-end s",
        "plain end-to-end s",
    ):
        table.add_column(column, justify="right")
    from deeprig.cluster.session import ray_session

    results = []
    # Interleaved plain / deeprig / plain, so that drift in this shared machine's speed
    # lands on both sides; an idle local Ray is up throughout.
    with tempfile.TemporaryDirectory() as tmp, ray_session():
        for name in names:
            console.print(f"{name}: plain PyTorch, deeprig run, plain PyTorch")
            before = plain_epoch_times(spec_for(name, args.epochs))
            gaps, in_loop, total = deeprig_epoch_times(spec_for(name, args.epochs), Path(tmp))
            after = plain_epoch_times(spec_for(name, args.epochs))
            plain_times = before[args.warmup :] + after[args.warmup :]
            results.append((name, plain_times, gaps, in_loop, total, sum(before)))
    for name, plain_times, gaps, in_loop, total, plain_total in results:
        p = statistics.median(plain_times)
        d = statistics.median(gaps[args.warmup - 1 :])
        loop = statistics.median(in_loop[args.warmup :])
        table.add_row(
            name,
            f"{p:.3f}",
            f"{d:.3f}",
            f"{d / p:.3f}x",
            f"{loop:.3f}",
            f"{total:.1f}",
            f"{plain_total:.1f}",
        )
    console.print(table)
    console.print(
        f"python {' '.join(sys.argv)}  |  torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
