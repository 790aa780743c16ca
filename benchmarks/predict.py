"""Batch inference: `deeprig predict` (Ray Data, an actor pool, each actor loading the
model once) against a plain single-process loop over the same files, in rows/s, and the
driver's peak memory as the input grows.

- Images: a Fashion-MNIST CNN (jobs/fashion_cnn.yaml's network, trained 1 epoch on 6,000
  training images) scores the 10,000 test images from an image folder
  (jobs/make_fashion_images.py's layout). A: deeprig with 1 and 2 actors (their time from
  the stream's start: actors started, models loaded, files decoded, output written). B:
  `mlflow.pytorch.load_model` and a torch `DataLoader` over the files (PIL, the same
  decoding), in one process on one thread (a thread of torch is what each actor gets:
  one core per side), the same batch size; its model load included.
- Tables: an MLP (2 x 64) over 16 float columns scores 1M rows of Parquet; B: the model
  loaded with `mlflow.pytorch.load_model`, the Parquet read with pyarrow, a `DataLoader`
  over it. The driver's peak memory of a predict job in a process of its own: 1M vs 4M
  rows (Ray given a 200 MB object store).
- Every side's predictions are compared with the plain loop's: the same classes, the
  probabilities to 1e-6.

    python benchmarks/predict.py              # ~5 minutes on 2 CPUs
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
from pathlib import Path

import numpy as np
from harness import Row, Target, make_console, median, print_rows
from rich.console import Console

FIGURE = "29 batch inference"
BATCH = 256
FEATURES = 16

# The driver of one predict job over `rows` rows of Parquet, in a process of its own:
# its peak memory (ru_maxrss) grown since before Ray started, and the job's rows/s.
MEMORY_SCRIPT = """
import json, os, resource, sys
import ray
from rich.console import Console
from deeprig.runners.predict import command_job, predict_spec, run
model, source, out = sys.argv[1:4]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
ray.init(address="local", num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False,
         log_to_driver=False)
spec = predict_spec(model, source, out, batch_size=int(sys.argv[4]), proba=True, workers=2)
outcome = run(spec, command_job(spec, Console(quiet=True), None, False))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"grew": peak - before, "rows_per_s": outcome.metrics["rows_per_s"]}))
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


def deeprig_predict(model: str, source: Path, out: Path, workers: int) -> tuple[float, object]:
    """(rows/s from the stream's start to the output's rename, the output)."""
    import pandas as pd
    from deeprig.runners.predict import command_job, predict_spec, run

    spec = predict_spec(
        model,
        str(source),
        str(out),
        batch_size=BATCH,
        workers=workers,
        proba=True,
        overwrite=True,
    )
    outcome = run(spec, command_job(spec, Console(quiet=True), None, False))
    return outcome.metrics["rows_per_s"], pd.read_parquet(out)


def plain_images(model_uri: str, paths: list[str]) -> tuple[float, np.ndarray]:
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

    torch.set_num_threads(1)
    started = time.perf_counter()
    model = mlflow.pytorch.load_model(model_uri)  # (exported: already in eval mode)
    parts = []
    with torch.no_grad():
        for batch in torch.utils.data.DataLoader(Files(), batch_size=BATCH):
            parts.append(model(batch).softmax(dim=1).numpy())
    seconds = time.perf_counter() - started
    return len(paths) / seconds, np.concatenate(parts)


def plain_table(model_uri: str, source: Path) -> tuple[float, np.ndarray]:
    import mlflow.pytorch
    import pyarrow.parquet as pq
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    model = mlflow.pytorch.load_model(model_uri)  # (exported: already in eval mode)
    table = pq.read_table(source, columns=[f"f{i}" for i in range(FEATURES)])
    x = torch.from_numpy(np.stack([c.to_numpy() for c in table.columns], axis=1))
    parts = []
    with torch.no_grad():
        for (batch,) in torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x), batch_size=BATCH
        ):
            parts.append(model(batch).softmax(dim=1).numpy())
    seconds = time.perf_counter() - started
    return len(x) / seconds, np.concatenate(parts)


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
    with ray_session(num_cpus=2):
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
        measured: dict[str, list[float]] = {"plain": [], "1": [], "2": []}
        equal = True
        for _ in range(repeats):  # (the sides take turns)
            rate, probabilities = plain_images(f"runs:/{cnn}/model", paths)
            measured["plain"].append(rate)
            for workers in (1, 2):
                rate, out = deeprig_predict(cnn, test_folder, root / "images.parquet", workers)
                measured[str(workers)].append(rate)
                order = np.argsort(out["path"].to_numpy())  # (the plain loop's sorted paths)
                equal &= same_answers(
                    out.iloc[order].reset_index(drop=True), probabilities, classes
                )
        plain = median(measured["plain"])
        for workers, target in (("1", Target(">=", 0.9)), ("2", Target(">=", 1.6))):
            rows.append(
                Row(
                    FIGURE,
                    f"Fashion-MNIST CNN, {len(paths):,} test images, batch {BATCH}",
                    f"deeprig, {workers} actor(s), rows/s",
                    median(measured[workers]),
                    "plain loop, 1 process, rows/s",
                    plain,
                    target,
                    repeats,
                    "same answers as the plain loop" if equal else "ANSWERS DIFFER",
                )
            )
        n = table_rows[0]
        plain_rate, probabilities = plain_table(f"runs:/{mlp}/model", big[n])
        rate, out = deeprig_predict(mlp, big[n], root / "table.parquet", 2)
        equal = same_answers(out, probabilities, ["0", "1", "2"])
        rows.append(
            Row(
                FIGURE,
                f"MLP, {n:,} rows of Parquet, batch {BATCH}",
                "deeprig, 2 actors, rows/s",
                rate,
                "plain loop, 1 process, rows/s",
                plain_rate,
                None,
                1,
                "same answers as the plain loop" if equal else "ANSWERS DIFFER",
            )
        )
    if ray.is_initialized():
        ray.shutdown()
    grown = {n: memory_run(mlp, big[n], root / f"memory-{n}.parquet") for n in table_rows}
    small_n, large_n = table_rows
    rows.append(
        Row(
            FIGURE,
            f"predict driver's peak memory, {large_n:,} vs {small_n:,} rows (batch 4096)",
            f"{large_n:,} rows, MB",
            grown[large_n]["grew"] / 2**20,
            f"{small_n:,} rows, MB",
            grown[small_n]["grew"] / 2**20,
            Target("<=", 1.2),
            1,
            "its own process, Ray given a 200 MB object store",
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
