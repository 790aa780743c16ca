"""A plain Ray Train loop: it calls Ray's own API only and imports nothing from deeprig, so
it runs unchanged under a bare `TorchTrainer` as under `deeprig run jobs/custom_loop.yaml`.

deeprig hands it the datasets (columns `x` and `y`), the resources, the checkpoint storage,
restarts after a worker failure, and MLflow: every `ray.train.report` becomes metrics at
its `epoch`, and the checkpoints it reports are ranked by the spec's `checkpoint.metric`.
"""

from __future__ import annotations

import os
import tempfile

import ray.train
import ray.train.torch
import torch
from torch import nn


def _model(hidden: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def train_loop_per_worker(config: dict) -> None:
    torch.manual_seed(0)
    model = _model(config.get("hidden", 64))
    start, saved = 0, None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:  # restarted after a failure: continue from the last report
        with checkpoint.as_directory() as folder:
            saved = torch.load(os.path.join(folder, "state.pt"), weights_only=False)
        model.load_state_dict(saved["model"])
        start = saved["epoch"] + 1
    model = ray.train.torch.prepare_model(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    if saved:
        optimizer.load_state_dict(saved["optimizer"])
    train = ray.train.get_dataset_shard("train")
    val = ray.train.get_dataset_shard("val")
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(start, config["epochs"]):
        if config.get("fail_at_epoch") == epoch and not checkpoint:
            raise RuntimeError(f"injected failure at epoch {epoch}")
        model.train()
        total, rows = 0.0, 0
        for batch in train.iter_torch_batches(batch_size=config.get("batch_size", 32)):
            x, y = batch["x"].float(), batch["y"].long()
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            total, rows = total + loss.item() * len(y), rows + len(y)
        model.eval()
        hits, seen = 0, 0
        with torch.no_grad():
            for batch in val.iter_torch_batches(batch_size=256):
                hits += (model(batch["x"].float()).argmax(1) == batch["y"]).sum().item()
                seen += len(batch["y"])
        metrics = {
            "epoch": epoch,  # from 0, as Ray's guide counts: recorded as given
            "train_loss": total / max(rows, 1),
            "val_accuracy": hits / max(seen, 1),
        }
        with tempfile.TemporaryDirectory() as folder:
            if ray.train.get_context().get_world_rank() == 0:
                inner = model.module if hasattr(model, "module") else model
                torch.save(
                    {
                        "model": inner.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "epoch": epoch,
                    },
                    os.path.join(folder, "state.pt"),
                )
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
            else:
                ray.train.report(metrics)
