"""FSDP against DDP, and a sharded checkpoint of 2 ranks resumed on 1, through deeprig's own
training pieces (training/epoch.py's optimiser steps, training/sharding.py's FSDP units,
`TrainState`'s sharded checkpoint) in 2 plain gloo processes (no Ray: seconds, not a job).

A small transformer (a built-in family, `shard: auto`: its blocks are the FSDP units)
learns a synthetic task whose label is a fixed linear function of the sequence's mean.
Every step's global batch is the same 32 rows whichever way it is split: rank r of 2 takes
rows r::2 of it, one process takes them all, so each step's mean loss and gradient are the
same number up to the order of float sums.

- parity: DDP and FSDP from the same seed, `STEPS` optimiser steps each; the loss of every
  step (the mean over both ranks), then the validation loss and accuracy after the last.
- reshard: the FSDP run writes its sharded checkpoint after the first half of the steps
  (every rank its shards, merged into one folder as Ray Train merges them); one process,
  with no process group (a one-worker fsdp job: the model whole), restores it and trains
  the second half on the whole global batches. Its losses against the FSDP run's own
  second half, which never stopped.

    python benchmarks/sharding_parity.py        # ~15 s on 2 CPUs
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

STEPS = 50
GLOBAL_BATCH = 32
SEQUENCE, FEATURES, CLASSES = 8, 16, 4
VAL_ROWS = 512
SPEC = {
    "name": "sharding-parity",
    "kind": "train",
    "seed": 0,
    "model": {"name": "transformer", "d_model": 64, "n_heads": 4, "n_layers": 2},
    "data": {"source": "builtin:synthetic", "shape": [SEQUENCE, FEATURES], "num_classes": CLASSES},
    "optim": {"batch_size": GLOBAL_BATCH // 2, "lr": 1e-3},
    "scaling": {"num_workers": 2, "strategy": "fsdp"},
}


@dataclass(frozen=True)
class Parity:
    ddp_losses: list[float]  # every step's loss, the mean over the ranks
    fsdp_losses: list[float]
    ddp_val: tuple[float, float]  # (validation loss, accuracy) after the last step
    fsdp_val: tuple[float, float]
    resumed_losses: list[float]  # the second half's, on one process from the checkpoint

    @property
    def straight_second_half(self) -> list[float]:
        return self.fsdp_losses[STEPS // 2 :]


def relative(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def max_relative(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b), (len(a), len(b))
    return max(relative(x, y) for x, y in zip(a, b, strict=True))


def _rows() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    rule = torch.randn(FEATURES, CLASSES, generator=gen)
    x = torch.randn(STEPS * GLOBAL_BATCH + VAL_ROWS, SEQUENCE, FEATURES, generator=gen)
    y = (x.mean(dim=1) @ rule).argmax(dim=1)
    return x[VAL_ROWS:], y[VAL_ROWS:], x[:VAL_ROWS], y[:VAL_ROWS]


class FixedBatches:
    """A shard as training/epoch.py reads it: the same batches in the same order every
    time (no shuffling), rank `rank` of `world` taking its rows of each global batch."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, rank: int, world: int, epochs: int):
        self._x, self._y, self._rank, self._world = x, y, rank, world
        self._per_epoch = len(y) // GLOBAL_BATCH // epochs

    def epoch(
        self, epoch: int, shuffle: bool, skip_batches: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        first = epoch * self._per_epoch + skip_batches
        for step in range(first, (epoch + 1) * self._per_epoch):
            rows = slice(step * GLOBAL_BATCH + self._rank, (step + 1) * GLOBAL_BATCH, self._world)
            yield self._x[rows], self._y[rows]


def _spec():
    from deeprig.spec.train import TrainSpec

    return TrainSpec.model_validate(SPEC)


def _model() -> nn.Module:
    from deeprig.models import build_model

    spec = _spec()
    torch.manual_seed(spec.seed)
    assert spec.model is not None
    return build_model(spec.model, (SEQUENCE, FEATURES), CLASSES)


def _train(model: nn.Module, optimizer, batches: FixedBatches, epoch: int, world: int):
    """One epoch of deeprig's steps; every step's loss, the mean over the ranks."""
    from deeprig.training.epoch import Position, StepParts, train_epoch

    parts = StepParts(
        model=model,
        optimizer=optimizer,
        scaler=torch.amp.GradScaler("cuda", enabled=False),
        loss_fn=nn.CrossEntropyLoss(reduction="sum"),
        classification=True,
        autocast_dtype=None,
        accumulate_steps=1,
        grad_clip_norm=None,
        world_size=world,
    )
    losses: list[torch.Tensor] = []
    train_epoch(parts, batches, Position(epoch=epoch), lambda _, loss: losses.append(loss.clone()))
    curve = torch.stack(losses)
    if world > 1:
        dist.all_reduce(curve)
        curve /= world
    return curve.tolist()


def _validate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Every rank scores the whole validation set (a sharded forward is a collective)."""
    from deeprig.training.sharding import is_sharded, reshard

    model.eval()
    with torch.no_grad():
        out = model(x)
    if is_sharded(model):
        reshard(model)
    model.train()
    loss = nn.functional.cross_entropy(out, y).item()
    return loss, (out.argmax(dim=1) == y).float().mean().item()


def _optimizer(model: nn.Module) -> torch.optim.Optimizer:
    from deeprig.training.optim import build_optimizer

    return build_optimizer(_spec().optim, model.parameters())


def _checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer):
    from deeprig.training.shards import sharded_state_dicts
    from deeprig.training.state import TrainState

    model_state, optimizer_state = sharded_state_dicts(model, optimizer)
    return TrainState(
        model=model_state,
        optimizer=optimizer_state,
        scheduler={},
        scaler={},
        epoch=0,
        metrics={},
        spec=_spec().model_dump(mode="json"),
        input_shape=(SEQUENCE, FEATURES),
        num_outputs=CLASSES,
        task="classification",
        run_id=None,
        sharded=True,
    )


def _two_ranks(rank: int, world: int, folder: str) -> None:
    from deeprig.training.sharding import family_units, fsdp_units, shard_model

    torch.set_num_threads(1)
    out = Path(folder)
    dist.init_process_group(
        "gloo", init_method=f"file://{out}/rendezvous", rank=rank, world_size=world
    )
    x, y, val_x, val_y = _rows()
    batches = FixedBatches(x, y, rank, world, epochs=2)
    results: dict = {}
    spec = _spec()
    for strategy in ("ddp", "fsdp"):
        model = _model()
        if strategy == "fsdp":
            units = fsdp_units(model, "auto", family_units(spec.model))
            model = shard_model(model, spec.scaling.fsdp, units, None, torch.device("cpu"))
        else:
            model = nn.parallel.DistributedDataParallel(model)
        optimizer = _optimizer(model)
        losses = _train(model, optimizer, batches, 0, world)
        if strategy == "fsdp":  # every rank its own folder, as under Ray Train
            _checkpoint(model, optimizer).save(out / f"rank{rank}", rank)
        losses += _train(model, optimizer, batches, 1, world)
        results[strategy] = (losses, _validate(model, val_x, val_y))
    if rank == 0:
        torch.save(results, out / "two_ranks.pt")
    dist.barrier()
    dist.destroy_process_group()


def _resumed_on_one(folder: Path) -> list[float]:
    """The 2 ranks' checkpoint read by one process, which trains the second half."""
    from deeprig.training.state import TrainState

    merged = folder / "merged"
    for rank in (0, 1):  # what Ray Train does with every rank's folder
        shutil.copytree(folder / f"rank{rank}", merged, dirs_exist_ok=True)
    model = _model()
    optimizer = _optimizer(model)
    TrainState.load(merged).load_into(model, optimizer)
    x, y, _, _ = _rows()
    return _train(model, optimizer, FixedBatches(x, y, 0, 1, epochs=2), 1, 1)


def measure() -> Parity:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        mp.spawn(_two_ranks, args=(2, tmp), nprocs=2, join=True)
        two = torch.load(folder / "two_ranks.pt")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            resumed = _resumed_on_one(folder)
        finally:
            torch.set_num_threads(threads)
    (ddp_losses, ddp_val), (fsdp_losses, fsdp_val) = two["ddp"], two["fsdp"]
    return Parity(ddp_losses, fsdp_losses, ddp_val, fsdp_val, resumed)


def main() -> int:
    parity = measure()
    print(
        f"after {STEPS} steps: loss ddp {parity.ddp_losses[-1]:.6f} fsdp "
        f"{parity.fsdp_losses[-1]:.6f} (max relative difference over the curve "
        f"{max_relative(parity.fsdp_losses, parity.ddp_losses):.2e}); validation loss, "
        f"accuracy: ddp {parity.ddp_val}, fsdp {parity.fsdp_val}"
    )
    print(
        "2 ranks -> 1 process: max relative difference from the straight run over steps "
        f"{STEPS // 2 + 1}-{STEPS}: "
        f"{max_relative(parity.resumed_losses, parity.straight_second_half):.2e}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
