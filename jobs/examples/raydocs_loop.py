"""A Ray Train loop written the way Ray's PyTorch guide writes one: it builds its own
DataLoader (scikit-learn's 8x8 digits, shipped with scikit-learn), counts epochs from 0,
and saves `{"model": state_dict, ...}` in `checkpoint.pt`. It imports nothing from deeprig
and runs unchanged under a bare `TorchTrainer` as under `deeprig run
jobs/raydocs_loop.yaml`, whose spec has no `data:` and names the network as `model:` so
the best checkpoint's weights become the run's MLflow model.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import ray.train
import ray.train.torch
import torch
from mynets import SmallResNet
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def _digits(seed: int) -> tuple[TensorDataset, TensorDataset]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy((digits.images / 16.0).astype(np.float32)[:, None])
    y = torch.from_numpy(digits.target.astype(np.int64))
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    cut = int(len(x) * 0.8)
    train, test = order[:cut], order[cut:]
    return TensorDataset(x[train], y[train]), TensorDataset(x[test], y[test])


def train_func(config: dict) -> None:
    torch.manual_seed(0)
    train_set, test_set = _digits(seed=0)
    batch_size = config.get("batch_size", 32)
    # [1] The loaders get a DistributedSampler each and move batches to the right device.
    train_loader = ray.train.torch.prepare_data_loader(
        DataLoader(train_set, batch_size=batch_size, shuffle=True)
    )
    test_loader = ray.train.torch.prepare_data_loader(DataLoader(test_set, batch_size=256))
    # [2] The model is wrapped in DistributedDataParallel.
    model = SmallResNet(num_outputs=10, input_shape=(1, 8, 8), width=config.get("width", 8))
    model = ray.train.torch.prepare_model(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(config["epochs"]):
        if ray.train.get_context().get_world_size() > 1:
            train_loader.sampler.set_epoch(epoch)
        model.train()
        for images, labels in train_loader:
            loss = loss_fn(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        hits, seen = 0, 0
        with torch.no_grad():
            for images, labels in test_loader:
                hits += (model(images).argmax(1) == labels).sum().item()
                seen += len(labels)
        # [3] Report metrics and checkpoint.
        metrics = {"loss": loss.item(), "accuracy": hits / max(seen, 1), "epoch": epoch}
        with tempfile.TemporaryDirectory() as folder:
            torch.save(
                {"model": model.module.state_dict(), "epoch": epoch},
                os.path.join(folder, "checkpoint.pt"),
            )
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
