"""Train overhead: `deeprig run` with 1 worker against a plain PyTorch loop, side by side.

Same model (built from the same spec), same data (the same rows, already in memory), same
batch size, same optimizer, one torch thread on both sides. Both run training plus a
validation pass every epoch. Two figures per workload, median of `--repeats` runs of each
side (interleaved plain/deeprig, then deeprig/plain, so a shared machine's drift lands on
both):

- steady-state epoch: deeprig's epoch is the wall time between consecutive epoch ends on
  rank 0 (when the epoch's checkpoint reaches storage), so it includes everything deeprig
  adds per epoch: Ray Train's report, the checkpoint, the MLflow logging. Every epoch's
  checkpoint is kept (num_to_keep = epochs) so the record can be read back. Target
  (issue 6): at most 1.05x.
- end-to-end, start-up included: deeprig's train runner starting and stopping its own local
  Ray (what `deeprig run` does after Python has imported it) against the plain script's
  data generation, model build and all its epochs.

    python benchmarks/train_overhead.py                 # MLP, CNN, LSTM, ~4.5 min on 2 CPUs
    python benchmarks/train_overhead.py --only digits-cnn --epochs 10 --repeats 1
    python benchmarks/train_overhead.py --quick         # smoke: < 1 minute
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from deeprig.data import describe_data
from deeprig.data.builtin import builtin_arrays, split_indices
from deeprig.models import build_model
from deeprig.spec import load_spec_text
from deeprig.training.optim import build_optimizer
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

FIGURE = "1 train overhead"

# Sized so that a plain epoch takes about 1 s at one thread on this 2-CPU machine: long
# enough to time, short enough that deeprig's fixed per-epoch cost still shows.
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
        data: {source: "builtin:synthetic", num_samples: 4000, shape: [1, 28, 28],
               num_classes: 10}
        optim: {batch_size: 64}""",
    "synthetic-lstm": """
        model: {name: lstm, hidden_size: 128}
        data: {source: "builtin:synthetic", num_samples: 6000, shape: [32, 16],
               num_classes: 10}
        optim: {batch_size: 64}""",
}
DEFAULT_WORKLOADS = ("synthetic-mlp", "synthetic-cnn", "synthetic-lstm")


def spec_for(name: str, epochs: int, extra: list[str] | tuple[str, ...] = ()):
    body = textwrap.dedent(WORKLOADS[name]).strip()
    text = f"name: bench-{name}\nkind: train\nseed: 0\n{body}\n"
    return load_spec_text(
        text,
        [
            f"optim.num_epochs={epochs}",
            "scaling.num_workers=1",
            "tracking.experiment=benchmarks",
            *extra,
        ],
    )


@dataclass(frozen=True)
class PlainRun:
    epoch_s: list[float]  # train + validation, per epoch
    train_s: list[float]  # the training part alone
    total_s: float  # data generation + model build + every epoch
    train_rows: int

    @property
    def samples_per_s(self) -> list[float]:
        return [self.train_rows / t for t in self.train_s]


def plain_run(spec, threads: int = 1, device: str = "cpu") -> PlainRun:
    """The loop a person would write by hand: tensors in memory, shuffled each epoch."""
    started_all = time.perf_counter()
    torch.set_num_threads(threads)
    torch.manual_seed(spec.seed)
    info = describe_data(spec.data)
    x, y = builtin_arrays(spec.data, spec.seed)
    train_idx, val_idx = split_indices(len(y), spec.data.val_fraction, spec.seed)
    x_train, y_train = (torch.as_tensor(a).to(device) for a in (x[train_idx], y[train_idx]))
    x_val, y_val = (torch.as_tensor(a).to(device) for a in (x[val_idx], y[val_idx]))
    model = build_model(spec.model, info.input_shape, info.num_outputs).to(device)
    optimizer = build_optimizer(spec.optim, model.parameters())
    loss_fn = torch.nn.CrossEntropyLoss()
    batch = spec.optim.batch_size
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    epoch_s, train_s = [], []
    for _ in range(spec.optim.num_epochs):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(y_train), device=device)
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            loss.backward()
            optimizer.step()
        sync()
        train_s.append(time.perf_counter() - started)
        model.eval()
        with torch.no_grad():
            for i in range(0, len(y_val), 1024):
                out = model(x_val[i : i + 1024])
                loss_fn(out, y_val[i : i + 1024]).item()
        epoch_s.append(time.perf_counter() - started)
    return PlainRun(epoch_s, train_s, time.perf_counter() - started_all, len(y_train))


def overhead_rows(
    names=DEFAULT_WORKLOADS,
    epochs: int = 5,
    warmup: int = 2,
    repeats: int = 3,
    console: Console | None = None,
) -> list[Row]:
    console = console or Console()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            plain, deeprig = [], []
            for r in range(repeats):
                order = ("plain", "deeprig") if r % 2 == 0 else ("deeprig", "plain")
                for side in order:
                    console.print(f"  {name}, repeat {r + 1}/{repeats}: {side}")
                    spec = spec_for(name, epochs)
                    if side == "plain":
                        plain.append(plain_run(spec))
                    else:
                        deeprig.append(run_deeprig_train(spec, Path(tmp), name))
            d_steady = median(median(d.steady_gaps(warmup)) for d in deeprig)
            p_steady = median(median(p.epoch_s[warmup:]) for p in plain)
            in_loop = median(median(d.steady("epoch_time_s", warmup)) for d in deeprig)
            rows.append(
                Row(
                    FIGURE,
                    f"{name}: steady-state epoch, 1 thread",
                    "deeprig s/epoch",
                    d_steady,
                    "plain s/epoch",
                    p_steady,
                    Target("<=", 1.05),
                    repeats,
                    f"epochs {warmup + 1}-{epochs} of {epochs}; deeprig's in-loop epoch_time_s "
                    f"{in_loop:.3f} s (train + val only; the rest of the gap is report, "
                    "checkpoint, logging)",
                )
            )
            rows.append(
                Row(
                    FIGURE,
                    f"{name}: end-to-end, start-up included",
                    "deeprig s",
                    median(d.total_s for d in deeprig),
                    "plain s",
                    median(p.total_s for p in plain),
                    None,
                    repeats,
                    f"{epochs} epochs; deeprig = the train runner starting and stopping its own "
                    "local Ray, MLflow run, model logging; plain = data, model, epochs. "
                    "deeprig: call to end of epoch 1 "
                    f"{median(d.before_first_epoch_s for d in deeprig):.1f} s, end of last "
                    f"epoch to return {median(d.after_last_epoch_s for d in deeprig):.1f} s",
                )
            )
    return rows


def rows(quick: bool = False, console: Console | None = None) -> list[Row]:
    """The figures `make bench` quotes (quick: a smoke run, under a minute)."""
    if quick:
        return overhead_rows(("digits-cnn",), epochs=3, warmup=1, repeats=1, console=console)
    return overhead_rows(console=console)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", choices=sorted(WORKLOADS))
    add_epoch_options(parser)
    args = parser.parse_args()
    console = make_console()
    if args.quick:
        found = rows(quick=True, console=console)
    else:
        names = tuple(args.only or DEFAULT_WORKLOADS)
        found = overhead_rows(names, args.epochs, args.warmup, args.repeats, console)
    print_rows(found, "deeprig (1 worker) vs plain PyTorch, 1 thread each", console)
    console.print(f"python {' '.join(sys.argv)}  |  torch {torch.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
