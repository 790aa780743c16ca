"""Image ingest: deeprig's image-folder pipeline on Ray Data against decoding the same PNG
files in a plain torch `DataLoader` with as many worker processes as this machine has
CPUs, in rows/s, side by side (the sides take turns, median of `--repeats`).

The files: Fashion-MNIST's first N training images (jobs/make_fashion_images.py's folders,
28x28 grey PNGs) when the Debian package is installed, else N generated 28x28 PNGs in 10
class folders. Nothing is trained: the figure is the data path alone.

- A, deeprig: `data/images.py`'s pipeline as a train job builds it (list and check the
  folder's headers, the seeded split of the file list, decoding, per-channel statistics
  of the training split, normalisation), then every row of both splits as torch batches,
  the way a worker gets them (`data/shard.py`). Two rows: shards held in memory (the
  default for a folder that fits: Ray tasks decode it once into arrays that go through
  the object store), and streamed (`data.cache: stream`: Ray Data decodes the file list
  as it is pulled). The decoding tasks get the CPUs a training job leaves them.
- B, DataLoader: an ImageFolder-style torch Dataset (PIL open, convert to L, to a float
  tensor in [0, 1], the class from the folder), `DataLoader(num_workers=CPUs,
  batch_size=256)`, one pass; its workers' start included, as a job's would be.

    python benchmarks/image_ingest.py              # ~2 minutes on 2 CPUs
    python benchmarks/image_ingest.py --quick      # smoke: 2000 files, one repeat

Target (issue 12): deeprig's image pipeline at least 0.9x the DataLoader's rows/s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from harness import Row, Target, make_console, median, print_rows
from rich.console import Console

FIGURE = "12 image ingest"
BATCH = 256


def image_folder(root: Path, count: int) -> str:
    """`count` 28x28 grey PNGs in class folders: Fashion-MNIST's when shipped, else noise."""
    from PIL import Image

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
    from make_fashion_images import CLASSES, SOURCE, read_idx

    if SOURCE.is_dir():
        images = read_idx(SOURCE / "train-images-idx3-ubyte.gz")[:count]
        labels = read_idx(SOURCE / "train-labels-idx1-ubyte.gz")[:count]
        kind = "Fashion-MNIST"
    else:
        rng = np.random.default_rng(0)
        images = rng.integers(0, 255, size=(count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=count)
        kind = "generated"
    for name in CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(image, mode="L").save(root / CLASSES[label] / f"{i:05d}.png")
    return kind


class PlainImageFolder(torch.utils.data.Dataset):
    """What a hand-written PyTorch script does (torchvision's ImageFolder, without it)."""

    def __init__(self, root: Path):
        self.classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        self.files = [
            (path, i) for i, c in enumerate(self.classes) for path in sorted((root / c).iterdir())
        ]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        from PIL import Image

        path, label = self.files[index]
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
        return torch.from_numpy(pixels)[None], label


def dataloader_pass(root: Path, workers: int) -> tuple[int, float]:
    started = time.perf_counter()
    loader = torch.utils.data.DataLoader(
        PlainImageFolder(root), batch_size=BATCH, shuffle=True, num_workers=workers
    )
    rows = sum(len(y) for _, y in loader)
    return rows, time.perf_counter() - started


def deeprig_pass(root: Path, budget, in_memory: bool) -> tuple[int, float]:
    """Folder to torch batches in the training process, as a job's worker gets them."""
    import ray
    from deeprig.data import build_datasets, describe_data
    from deeprig.data.shard import ShardBatches, array_shard
    from deeprig.spec.data import ImagesData

    started = time.perf_counter()
    spec = ImagesData(source="images", path=str(root))
    info = describe_data(spec)
    prepared = build_datasets(spec, info, 0, 1, budget.data_cpus, in_memory)
    rows = 0
    for name in ("train", "val"):
        if prepared.arrays is not None:  # (the runner puts them, each worker gets its share)
            shard = array_shard(ray.put(prepared.arrays[name]), 0, 1)
        else:
            shard = getattr(prepared, name).iterator()
        batches = ShardBatches(shard, BATCH, torch.device("cpu"), torch.long, False, seed=0)
        rows += sum(len(y) for _, y in batches.epoch(0, shuffle=name == "train"))
    return rows, time.perf_counter() - started


def ingest_rows(count: int, repeats: int, console: Console) -> list[Row]:
    from deeprig.cluster.resources import budget_workers, connected_resources
    from deeprig.cluster.session import ray_session
    from deeprig.spec.scaling import ScalingSpec

    workers = os.cpu_count() or 1
    rates: dict[str, list[float]] = {"memory": [], "stream": [], "plain": []}
    with tempfile.TemporaryDirectory() as tmp, ray_session():
        root = Path(tmp) / "images"
        kind = image_folder(root, count)
        console.print(f"  {count} {kind} PNGs; DataLoader with {workers} workers")
        budget = budget_workers(ScalingSpec(num_workers=1), connected_resources())
        for r in range(repeats):
            console.print(f"  repeat {r + 1}/{repeats}: deeprig (memory, stream), DataLoader")
            for side in ("memory", "stream"):
                rows, seconds = deeprig_pass(root, budget, in_memory=side == "memory")
                assert rows == count, (side, rows, count)
                rates[side].append(rows / seconds)
            rows, seconds = dataloader_pass(root, workers)
            rates["plain"].append(rows / seconds)
    plain = (f"DataLoader({workers} workers) rows/s", median(rates["plain"]))
    steps = "list+check headers, split, decode, channel stats, normalise, batches"
    return [
        Row(
            FIGURE,
            f"{count} {kind} 28x28 PNGs to batches, shards in memory (the default)",
            "deeprig rows/s",
            median(rates["memory"]),
            *plain,
            Target(">=", 0.9),
            repeats,
            f"deeprig: {steps}; decoded once by Ray tasks into arrays",
        ),
        Row(
            FIGURE,
            f"{count} {kind} 28x28 PNGs to batches, streamed (data.cache: stream)",
            "deeprig rows/s",
            median(rates["stream"]),
            *plain,
            None,
            repeats,
            f"deeprig: {steps}; Ray Data map_batches over the file list (2 executions)",
        ),
    ]


def rows(quick: bool = False, console: Console | None = None) -> list[Row]:
    """The figures `make bench` quotes (quick: a smoke run, under a minute)."""
    console = console or make_console()
    if quick:
        return ingest_rows(2000, 1, console)
    return ingest_rows(20_000, 3, console)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smoke run, under a minute")
    args = parser.parse_args()
    console = make_console()
    found = rows(True, console) if args.quick else ingest_rows(args.files, args.repeats, console)
    print_rows(found, "image ingest: Ray Data vs torch DataLoader, rows/s", console)
    console.print(f"python {' '.join(sys.argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
