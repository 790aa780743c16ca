"""The raw-Ray floor of a 2-worker train job: what any job on Ray Train pays before and
after its epochs. Imports, `ray.init`, a 2-worker `TorchTrainer` over a Ray Data dataset
of the digits (the quickstart's data), a loop that reads its shard once and reports once.
Prints `FLOOR <stage> <unix seconds>` lines for benchmarks/startup.py.

    python benchmarks/floors/raw_ray.py [--no-ray-data] [--ddp]

--ddp: the loop also wraps the quickstart's MLP in DistributedDataParallel
(`ray.train.torch.prepare_model`), as any data-parallel job must before its first step.
"""

from __future__ import annotations

import sys
import tempfile
import time

print(f"FLOOR process_started {time.time():.3f}", flush=True)
import numpy as np  # noqa: E402
import ray  # noqa: E402
import ray.data  # noqa: E402
import ray.train  # noqa: E402
import ray.train.torch  # noqa: E402
import torch  # noqa: E402
from ray.train import ScalingConfig  # noqa: E402
from ray.train.torch import TorchTrainer  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

print(f"FLOOR imported {time.time():.3f}", flush=True)


def loop(config):
    if config["ddp"]:  # DDP's constructor is where torch imports its compiler (dynamo)
        from torch import nn

        mlp = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.Linear(64, 10))
        ray.train.torch.prepare_model(mlp)
    if config["ray_data"]:
        rows = sum(len(b["y"]) for b in ray.train.get_dataset_shard("train").iter_torch_batches())
    else:
        rows = len(config["y"])
    ended_at = time.time()
    ray.train.report({"rows": rows, "threads": torch.get_num_threads()})
    if ray.train.get_context().get_world_rank() == 0:  # (Train V2 keeps no checkpoint-less
        with open(config["stamp"], "w") as handle:  # report's metrics: a file says when)
            handle.write(f"{ended_at:.3f}")


if __name__ == "__main__":
    use_ray_data = "--no-ray-data" not in sys.argv
    ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False)
    print(f"FLOOR ray_started {time.time():.3f}", flush=True)
    digits = load_digits()
    x, y = (digits.images / 16.0).astype(np.float32), digits.target
    datasets = None
    stamp = tempfile.mktemp(suffix=".reported")
    config = {
        "ddp": "--ddp" in sys.argv,
        "ray_data": use_ray_data,
        "y": None if use_ray_data else y,
        "stamp": stamp,
    }
    if use_ray_data:
        rows = [{"x": a, "y": b} for a, b in zip(x, y, strict=True)]
        datasets = {"train": ray.data.from_items(rows)}
    trainer = TorchTrainer(
        loop,
        train_loop_config=config,
        # fractional CPUs leave one for Ray Data, as deeprig's budget does
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        datasets=datasets,
    )
    trainer.fit()
    with open(stamp) as handle:
        print(f"FLOOR reported {handle.read()}", flush=True)
    print(f"FLOOR fit_returned {time.time():.3f}", flush=True)
    ray.shutdown()
    print(f"FLOOR ended {time.time():.3f}", flush=True)
