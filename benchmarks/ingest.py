"""Ingest: Ray Data into torch batches against plain in-memory tensor batches, in rows/s,
side by side on this machine, same rows, same batch size, nothing trained (so the figure is
the data path alone).

The data: synthetic 1x28x28 float32 images with an int64 label (the CNN workload's shape),
written to Parquet in a temporary folder (a fixed-size-list column `x`, a label `y`). The
sides, each timed per pass over its rows (the sides taking turns pass by pass), median over
passes and `--repeats`:

- A, deeprig stream: deeprig's own Parquet pipeline (data/pipeline.py: read_parquet ->
  map_batches -> train/validation split), handed to a worker the way Ray Train does
  (`streaming_split`), iterated by deeprig's `ShardBatches` (data/shard.py) in stream mode:
  `iter_torch_batches` with a local shuffle buffer, as every epoch of `data.cache: stream`.
- A, raw Ray Data: `read_parquet(...).map_batches(...).iter_torch_batches(...)`, re-reading
  the files on every pass, no shuffle.
- A, deeprig memory cache: `ShardBatches` in memory mode (`data.cache: memory`, the default
  for shards under 512 MiB): the one-time read, then shuffled slices of tensors each pass.
- B, plain: the same rows as torch tensors in memory, a fresh permutation each pass, sliced
  into batches (what train_overhead's plain loop does); in-memory sides take 10x as many
  passes (each takes milliseconds). Context: torch's DataLoader over a
  TensorDataset (shuffle=True), the usual idiom.

    python benchmarks/ingest.py                 # ~1 minute on 2 CPUs
    python benchmarks/ingest.py --quick         # smoke: < 1 minute

Target (issue 6): Ray Data at least 0.9x the rows/s of plain in-memory batches.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from harness import Row, Target, make_console, median, print_rows
from rich.console import Console

FIGURE = "3 ingest"
SHAPE = (1, 28, 28)


def write_parquet(folder: Path, num_rows: int, files: int = 4, seed: int = 0):
    """Synthetic CNN rows (deeprig's own generator) as Parquet; returns the x, y arrays too."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from deeprig.data.builtin import synthetic_arrays
    from deeprig.spec.data import SyntheticData

    data = SyntheticData(source="builtin:synthetic", num_samples=num_rows, shape=list(SHAPE))
    x, y = synthetic_arrays(data, seed)
    flat = x.reshape(num_rows, -1)
    folder.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(np.array_split(np.arange(num_rows), files)):
        table = pa.table(
            {
                "x": pa.FixedSizeListArray.from_arrays(
                    pa.array(flat[part].reshape(-1)), flat.shape[1]
                ),
                "y": pa.array(y[part]),
            }
        )
        pq.write_table(table, folder / f"part-{i}.parquet")
    return x, y


def _alternating_passes(makers: dict, passes: int) -> dict[str, float]:
    """Median rows/s of each side; `makers[side](i)` returns pass i's iterable of (x, y).
    The sides take turns pass by pass, so drift in the machine's speed lands on all."""
    rates: dict[str, list[float]] = {side: [] for side in makers}
    for i in range(passes):
        for side, make in makers.items():
            started = time.perf_counter()
            rows = 0
            for x, y in make(i):
                assert x.dtype == torch.float32 and y.dtype == torch.int64
                rows += len(y)
            rates[side].append(rows / (time.perf_counter() - started))
    return {side: median(found) for side, found in rates.items()}


def plain_batches(x: torch.Tensor, y: torch.Tensor, batch: int, seed: int):
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    for i in range(0, len(order), batch):
        idx = order[i : i + batch]
        yield x[idx], y[idx]


def dataloader_batches(x: torch.Tensor, y: torch.Tensor, batch: int, seed: int):
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(
        TensorDataset(x, y),
        batch_size=batch,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    yield from loader


def ingest_rows(
    num_rows: int = 40_000,
    batch: int = 64,
    passes: int = 3,
    repeats: int = 3,
    console: Console | None = None,
) -> list[Row]:
    import ray.data
    from deeprig.cluster.resources import budget_workers, connected_resources
    from deeprig.cluster.session import ray_session
    from deeprig.data import build_datasets, describe_data
    from deeprig.data.shard import ShardBatches
    from deeprig.spec.data import ParquetData
    from deeprig.spec.scaling import ScalingSpec

    console = console or Console()
    results: dict[str, list[float]] = {
        "stream": [],
        "raw": [],
        "memory": [],
        "plain": [],
        "dataloader": [],
    }
    first_read: list[float] = []
    build_s: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, ray_session():
        folder = Path(tmp) / "rows"
        console.print(f"  writing {num_rows} rows of {SHAPE} float32 as Parquet")
        write_parquet(folder, num_rows)
        spec = ParquetData(
            source="parquet",
            path=str(folder),
            features=["x"],
            label="y",
            feature_shape=list(SHAPE),
        )
        info = describe_data(spec)
        budget = budget_workers(ScalingSpec(num_workers=1), connected_resources())
        cpu = torch.device("cpu")

        def reshape(b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            xs = b["x"]
            if xs.dtype == object:  # a list column may come as an array of arrays
                xs = np.stack(xs)
            xs = xs.astype(np.float32, copy=False)
            return {"x": xs.reshape(len(xs), *SHAPE), "y": b["y"].astype(np.int64)}

        for r in range(repeats):
            console.print(f"  repeat {r + 1}/{repeats}: deeprig stream, raw, memory, plain")
            started = time.perf_counter()
            train = build_datasets(spec, info, 0, 1, budget.data_cpus).train
            shard = train.streaming_split(1, equal=True)[0]
            build_s.append(time.perf_counter() - started)
            # The same rows, in memory, for the plain side.
            x_mem, y_mem = [], []
            for b in train.iter_torch_batches(batch_size=4096):
                x_mem.append(b["x"].to(torch.float32))
                y_mem.append(b["y"].to(torch.int64))
            x_plain, y_plain = torch.cat(x_mem), torch.cat(y_mem)

            stream = ShardBatches(shard, batch, cpu, torch.long, in_memory=False, seed=r)
            raw = (
                ray.data.read_parquet(str(folder))
                .select_columns(["x", "y"])
                .map_batches(reshape, batch_format="numpy")
            )

            def raw_batches(_i, ds=raw):
                for b in ds.iter_torch_batches(
                    batch_size=batch, dtypes={"x": torch.float32, "y": torch.long}
                ):
                    yield b["x"], b["y"]

            found = _alternating_passes(
                {"stream": lambda i, s=stream: s.epoch(i, shuffle=True), "raw": raw_batches},
                passes,
            )

            started = time.perf_counter()
            memory = ShardBatches(shard, batch, cpu, torch.long, in_memory=True, seed=r)
            first_read.append(time.perf_counter() - started)
            # In-memory passes take milliseconds: time more of them (same count each side).
            found |= _alternating_passes(
                {
                    "memory": lambda i, m=memory: m.epoch(i, shuffle=True),
                    "plain": lambda i, x=x_plain, y=y_plain, r=r: plain_batches(
                        x, y, batch, 1000 * r + i
                    ),
                    "dataloader": lambda i, x=x_plain, y=y_plain, r=r: dataloader_batches(
                        x, y, batch, 1000 * r + i
                    ),
                },
                10 * passes,
            )
            for side, rate in found.items():
                results[side].append(rate)

    plain = median(results["plain"])
    setting = (
        f"{info.num_train} train rows of {SHAPE} float32, batch {batch}; {passes} passes "
        f"through Ray Data, {10 * passes} through memory"
    )

    def row(key: str, what: str, note: str, target: Target | None = Target(">=", 0.9)) -> Row:
        return Row(
            FIGURE,
            what,
            "rows/s",
            median(results[key]),
            "plain rows/s",
            plain,
            target,
            repeats,
            note,
        )

    return [
        row(
            "stream",
            "deeprig stream (Ray Data iter_torch_batches, shuffled) vs plain tensors",
            f"{setting}; pipeline build (read + split) {median(build_s):.2f} s, not in rows/s",
        ),
        row("raw", "raw Ray Data read_parquet -> iter_torch_batches vs plain tensors", setting),
        row(
            "memory",
            "deeprig memory cache (read once, slice tensors) vs plain tensors",
            f"{setting}; the one-time read into tensors took {median(first_read):.2f} s "
            "(not in rows/s)",
        ),
        row(
            "dataloader",
            "context: torch DataLoader(TensorDataset) vs plain tensors",
            "per-row indexing and collate: the usual idiom, itself far from plain slicing",
            target=None,
        ),
    ]


def rows(quick: bool = False, console: Console | None = None) -> list[Row]:
    """The figures `make bench` quotes (quick: a smoke run, under a minute)."""
    if quick:
        return ingest_rows(num_rows=4000, passes=2, repeats=1, console=console)
    return ingest_rows(console=console)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smoke run, under a minute")
    args = parser.parse_args()
    console = make_console()
    if args.quick:
        found = rows(quick=True, console=console)
    else:
        found = ingest_rows(args.rows, args.batch_size, args.passes, args.repeats, console)
    print_rows(found, "ingest: Ray Data vs in-memory tensors, rows/s", console)
    console.print(f"python {' '.join(sys.argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
