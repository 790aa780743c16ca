"""Batch inference: `deeprig predict` (Ray Data, an actor pool, each actor loading the
model once) against a plain single-process loop over the same files, in rows/s two ways,
and the driver's peak memory as the input grows.

- Rows/s end to end: what a user waits, from the `run` call to the output's rename (the
  checks, the MLflow run, the actors' start and model loads, reads, scoring and the
  write; Ray already up, its start printed apart), against the plain loop's model load to
  its last batch. Steady state: the rows scored once every actor had scored its first
  batch, over the time since then (the run's `rows_per_s_steady`), against the plain
  loop's rows after its first batch over the time since that batch. Both are quoted.
- Images: a Fashion-MNIST CNN (jobs/fashion_cnn.yaml's network, trained 1 epoch on 6,000
  training images) scores the 10,000 test images from an image folder
  (jobs/make_fashion_images.py's layout), batch 256. A: deeprig with 1 and 2 actors. B:
  `mlflow.pytorch.load_model` and a torch `DataLoader` over the files (PIL, the same
  decoding) in one process, the same batch size, torch's default threads (all cores).
- Tables: an MLP (2 x 64) over 16 float columns scores 1M rows of Parquet, batch 4096 on
  both sides (a tiny model: per-batch costs dominate small batches); B: the model loaded
  with `mlflow.pytorch.load_model`, the Parquet read with pyarrow, a `DataLoader` over it.
  The driver's peak memory (ru_maxrss) of a predict job in a process of its own: 1M vs 4M
  rows (Ray given a 200 MB object store).
- Every deeprig run's `time.*` metrics are printed: where its time went.
- Every side's predictions are compared with the plain loop's: the same classes, the
  probabilities to 1e-6.

    python benchmarks/predict.py              # ~6 minutes on 2 CPUs
    python benchmarks/predict.py --quick      # smoke: 1000 images, 100k/400k rows

Targets (issue 29): 2 actors >= 1.6x the plain loop's rows/s, 1 actor >= 0.9x; the
driver's peak memory for 4M rows <= 1.2x that for 1M rows (flat as rows grow).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from harness import Row, Target, make_console, median, print_rows
from rich.console import Console

FIGURE = "29 batch inference"
BATCH = 256  # images
TABLE_BATCH = 4096
FEATURES = 16
# The stages of a predict stream that its run records, in the order they are printed.
STAGES = (
    "time.first_batch_s",
    "time.actors_ready_s",
    "time.model_load_s",
    "time.read_s",
    "time.score_s",
    "time.write_s",
    "time.predict_s",
)

# The driver of one predict job over `rows` rows of Parquet, in a process of its own:
# its peak memory (ru_maxrss, the process's whole life), and the job's rows/s.
MEMORY_SCRIPT = """
import json, os, resource, sys
import ray
from rich.console import Console
from deeprig.runners.predict import command_job, predict_spec, run
model, source, out = sys.argv[1:4]
ray.init(address="local", num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False,
         log_to_driver=False)
spec = predict_spec(model, source, out, batch_size=int(sys.argv[4]), proba=True, workers=2)
outcome = run(spec, command_job(spec, Console(quiet=True), None, False))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"peak": peak, "rows_per_s": outcome.metrics["rows_per_s"]}))
"""


def write_images(root: Path, train: int, test: int) -> tuple[Path, Path]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))
    from make_fashion_images import CLASSES, SOURCE, read_idx
    from PIL import Image

    for split, prefix, count in (("train", "train", train), ("test", "t10k", test)):
        images = read_idx(SOURCE / f"{prefix}-images-idx3-ubyte.gz")[:count]
        labels = read_idx(SOURCE / f"{prefix}-labels-idx1-ubyte.gz")[:count]
        for name in CLASSES:
            (root / split / name).mkdir(parents=True, exist_ok=True)
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            Image.fromarray(image, mode="L").save(root / split / CLASSES[label] / f"{i:05d}.png")
    return root / "train", root / "test"


def write_table(path: Path, rows: int, seed: int = 0) -> Path:
    """`rows` rows of FEATURES float columns (and a 3-class label made of them), written in
    100k-row groups without holding them all."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    for start in range(0, rows, 100_000):
        rng = np.random.default_rng(seed + start)
        x = rng.normal(size=(min(100_000, rows - start), FEATURES)).astype(np.float32)
        label = np.digitize(x[:, 0] + x[:, 1], [-0.5, 0.5])
        table = pa.table({**{f"f{i}": x[:, i] for i in range(FEATURES)}, "label": label})
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()
    return path


def train(spec: dict) -> str:
    import deeprig

    return deeprig.run(spec).run_id


@dataclass(frozen=True)
class Rates:
    end_to_end: float  # rows/s
    steady: float  # rows/s once warm (nan: not measured)


def deeprig_predict(
    model: str, source: Path, out: Path, workers: int, batch: int, console: Console
) -> tuple[Rates, object]:
    """(rows/s end to end and steady, the output), where the stream's time went printed."""
    import pandas as pd
    from deeprig.runners.predict import command_job, predict_spec, run

    started = time.perf_counter()
    spec = predict_spec(
        model,
        str(source),
        str(out),
        batch_size=batch,
        workers=workers,
        proba=True,
        overwrite=True,
    )
    outcome = run(spec, command_job(spec, Console(quiet=True), None, False))
    seconds = time.perf_counter() - started
    m = outcome.metrics
    stages = ", ".join(f"{k[5:-2]} {m[k]:.2f}" for k in STAGES if k in m)
    console.print(
        f"  {source.name}, {workers} actor(s): {seconds:.2f} s in all; stream (s): {stages}; "
        f"rows/s {m['rows'] / seconds:,.0f} end to end, "
        f"{m.get('rows_per_s_steady', float('nan')):,.0f} steady"
    )
    rates = Rates(m["rows"] / seconds, m.get("rows_per_s_steady", float("nan")))
    return rates, pd.read_parquet(out)


def timed_batches(model, loader, started: float) -> tuple[Rates, np.ndarray]:
    """The plain loop's rates (end to end from `started`, before its model load) and its
    probabilities."""
    import torch

    parts, rows, first_at, first_rows = [], 0, None, 0
    with torch.no_grad():
        for batch in loader:
            parts.append(model(batch).softmax(dim=1).numpy())
            rows += len(batch)
            if first_at is None:
                first_at, first_rows = time.perf_counter(), rows
    ended = time.perf_counter()
    assert first_at is not None
    steady = (rows - first_rows) / (ended - first_at) if ended > first_at else float("nan")
    return Rates(rows / (ended - started), steady), np.concatenate(parts)


def plain_images(model_uri: str, paths: list[str]) -> tuple[Rates, np.ndarray]:
    """(rows/s, probabilities) of the plain loop over image files."""
    import mlflow.pytorch
    import torch
    from PIL import Image

    class Files(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(paths)

        def __getitem__(self, i: int):
            with Image.open(paths[i]) as image:
                pixels = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
            return torch.from_numpy(pixels[None])

    started = time.perf_counter()
    model = mlflow.pytorch.load_model(model_uri)  # (exported: already in eval mode)
    loader = torch.utils.data.DataLoader(Files(), batch_size=BATCH)
    return timed_batches(model, loader, started)


def plain_table(model_uri: str, source: Path) -> tuple[Rates, np.ndarray]:
    import mlflow.pytorch
    import pyarrow.parquet as pq
    import torch

    started = time.perf_counter()
    model = mlflow.pytorch.load_model(model_uri)  # (exported: already in eval mode)
    table = pq.read_table(source, columns=[f"f{i}" for i in range(FEATURES)])
    x = torch.from_numpy(np.stack([c.to_numpy() for c in table.columns], axis=1))
    loader = torch.utils.data.DataLoader(x, batch_size=TABLE_BATCH)
    return timed_batches(model, loader, started)


def same_answers(out, probabilities: np.ndarray, classes: list[str]) -> bool:
    """The same classes and the probabilities to 1e-6."""
    mine = out[[f"proba_{c}" for c in classes]].to_numpy()
    same_class = (
        np.asarray(classes)[probabilities.argmax(1)] == out["prediction"].astype(str)
    ).all()
    return bool(same_class) and bool(np.abs(mine - probabilities).max() <= 1e-6)


def memory_run(model: str, source: Path, out: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, model, str(source), str(out), str(4096)],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def rate_rows(what: str, a_label: str, a: Rates, b: Rates, target, repeats: int, note: str):
    """Two rows of one comparison: end to end, then steady state."""
    return [
        Row(FIGURE, f"{what}, end to end", a_label, a.end_to_end, "plain loop, rows/s",
            b.end_to_end, target, repeats, note),
        Row(FIGURE, f"{what}, steady state", a_label, a.steady, "plain loop, rows/s",
            b.steady, target, repeats, note),
    ]  # fmt: skip


def median_rates(rates: list[Rates]) -> Rates:
    return Rates(median(r.end_to_end for r in rates), median(r.steady for r in rates))


def bench_rows(
    images: tuple[int, int], table_rows: tuple[int, int], repeats: int, console: Console
) -> list[Row]:
    import mlflow
    import ray
    from deeprig.cluster.session import ray_session
    from deeprig.cluster.tracking_target import resolve_tracking

    root = Path(tempfile.mkdtemp(prefix="deeprig-bench-predict-"))
    os.environ["DEEPRIG_HOME"] = str(root / "home")
    console.print(f"writing {images[0]:,} + {images[1]:,} PNGs and {sum(table_rows):,} rows")
    train_folder, test_folder = write_images(root / "fashion", *images)
    small = write_table(root / "train.parquet", 20_000, seed=10**9)
    big = {n: write_table(root / f"rows-{n}.parquet", n) for n in table_rows}
    rows: list[Row] = []
    ray_started = time.perf_counter()
    with ray_session(num_cpus=2):
        console.print(f"Ray started in {time.perf_counter() - ray_started:.1f} s")
        console.print("training the CNN and the MLP (1 epoch each)")
        cnn = train(
            {
                "name": "bench-fashion",
                "kind": "train",
                "seed": 0,
                "model": {"name": "cnn", "channels": [32, 64], "kernel_size": 3, "hidden": 128},
                "data": {"source": "images", "path": str(train_folder), "channels": 1},
                "optim": {"name": "adamw", "lr": 0.002, "batch_size": 128, "num_epochs": 1},
                "scaling": {"num_workers": 1},
            }
        )
        mlp = train(
            {
                "name": "bench-table",
                "kind": "train",
                "seed": 0,
                "model": {"name": "mlp", "hidden": [64, 64]},
                "data": {
                    "source": "parquet",
                    "path": str(small),
                    "features": [f"f{i}" for i in range(FEATURES)],
                    "label": "label",
                },
                "optim": {"lr": 0.01, "batch_size": 256, "num_epochs": 1},
                "scaling": {"num_workers": 1},
            }
        )
        mlflow.set_tracking_uri(resolve_tracking(None).uri)
        paths = sorted(str(p) for p in test_folder.rglob("*.png"))
        classes = sorted(p.name for p in test_folder.iterdir())
        measured: dict[str, list[Rates]] = {"plain": [], "1": [], "2": []}
        equal = True
        for _ in range(repeats):  # (the sides take turns)
            rates, probabilities = plain_images(f"runs:/{cnn}/model", paths)
            console.print(
                f"  plain loop: rows/s {rates.end_to_end:,.0f} end to end, "
                f"{rates.steady:,.0f} steady"
            )
            measured["plain"].append(rates)
            for workers in (1, 2):
                rates, out = deeprig_predict(
                    cnn, test_folder, root / "images.parquet", workers, BATCH, console
                )
                measured[str(workers)].append(rates)
                order = np.argsort(out["path"].to_numpy())  # (the plain loop's sorted paths)
                equal &= same_answers(
                    out.iloc[order].reset_index(drop=True), probabilities, classes
                )
        plain = median_rates(measured["plain"])
        note = "same answers as the plain loop" if equal else "ANSWERS DIFFER"
        for workers, target in (("1", Target(">=", 0.9)), ("2", Target(">=", 1.6))):
            rows += rate_rows(
                f"Fashion-MNIST CNN, {len(paths):,} test images, batch {BATCH}",
                f"deeprig, {workers} actor(s), rows/s",
                median_rates(measured[workers]),
                plain,
                target,
                repeats,
                note,
            )
        n = table_rows[0]
        plain_rates, probabilities = plain_table(f"runs:/{mlp}/model", big[n])
        rates, out = deeprig_predict(mlp, big[n], root / "table.parquet", 2, TABLE_BATCH, console)
        equal = same_answers(out, probabilities, ["0", "1", "2"])
        rows += rate_rows(
            f"MLP, {n:,} rows of Parquet, batch {TABLE_BATCH}",
            "deeprig, 2 actors, rows/s",
            rates,
            plain_rates,
            None,
            1,
            "same answers as the plain loop" if equal else "ANSWERS DIFFER",
        )
    if ray.is_initialized():
        ray.shutdown()
    peak = {n: memory_run(mlp, big[n], root / f"memory-{n}.parquet") for n in table_rows}
    small_n, large_n = table_rows
    rows.append(
        Row(
            FIGURE,
            f"predict driver's peak memory, {large_n:,} vs {small_n:,} rows (batch 4096)",
            f"{large_n:,} rows, MB",
            peak[large_n]["peak"] / 2**20,
            f"{small_n:,} rows, MB",
            peak[small_n]["peak"] / 2**20,
            Target("<=", 1.2),
            1,
            "its own process (ru_maxrss, imports included), Ray given a 200 MB object store",
        )
    )
    return rows


def rows(quick: bool = False, console: Console | None = None) -> list[Row]:
    """The figures `make bench` quotes (quick: a smoke run)."""
    console = console or make_console()
    if quick:
        return bench_rows((1000, 1000), (100_000, 400_000), 1, console)
    return bench_rows((6000, 10_000), (1_000_000, 4_000_000), 2, console)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run")
    args = parser.parse_args()
    console = make_console()
    found = rows(args.quick, console)
    print_rows(found, "batch inference: deeprig predict vs a plain loop", console)
    console.print(f"python {' '.join(sys.argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
