"""jobs/quickstart.yaml as a hand-written PyTorch script: the same MLP (128, 64, dropout
0.1), the same digits and split size, AdamW at 3e-3, batch 32 per worker x 2 (one process,
batch 64), 15 epochs with validation each. No Ray, no tracking, no checkpoints.

    python benchmarks/floors/plain_quickstart.py
"""

from __future__ import annotations

import time

print(f"PLAIN process_started {time.time():.3f}", flush=True)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from torch import nn  # noqa: E402

if __name__ == "__main__":
    torch.manual_seed(0)
    torch.set_num_threads(2)
    digits = load_digits()
    x = torch.tensor((digits.images / 16.0).reshape(-1, 64), dtype=torch.float32)
    y = torch.tensor(digits.target)
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(y)))
    val, train = order[:359], order[359:]
    model = nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.1),
        nn.Linear(128, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 10),
    )  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(15):
        model.train()
        for batch in train[torch.randperm(len(train))].split(64):
            optimizer.zero_grad()
            loss_fn(model(x[batch]), y[batch]).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(x[val]).argmax(1) == y[val]).float().mean().item()
        if epoch == 0:
            print(f"PLAIN first_epoch_end {time.time():.3f}", flush=True)
    print(f"PLAIN ended {time.time():.3f} val_accuracy {accuracy:.3f}", flush=True)
