"""One model's loss and scores over a split: each epoch's validation on every rank, and
the best model's test set on the driver at the end."""

from __future__ import annotations

import torch
from torch import nn

from deeprig.data.shard import ShardBatches
from deeprig.training.epoch import autocast, loss_of
from deeprig.training.scores import ClassScores


def loss_function(classification: bool) -> nn.Module:
    """Summed over a batch: the loop divides by rows itself (ranks' shards differ)."""
    return nn.CrossEntropyLoss(reduction="sum") if classification else nn.MSELoss(reduction="sum")


@torch.no_grad()
def evaluate(
    model, batches: ShardBatches, loss_fn, scores: ClassScores | None, device, autocast_dtype
):
    """This rank's validation (loss sum, hits, rows, absolute error sum); `scores` gathers
    what F1, AUC and the confusion matrix need."""
    model.eval()
    totals = torch.zeros(4, device=device)
    classification = scores is not None
    for x, y in batches.epoch(0, shuffle=False):
        with autocast(device, autocast_dtype):
            out = model(x)
        totals[0] += loss_of(loss_fn, out, y, classification)
        if scores is not None:
            totals[1] += (out.argmax(dim=1) == y).sum()
            scores.update(out, y)
        else:
            totals[3] += (out.float().reshape(-1) - y).abs().sum()
        totals[2] += len(y)
    return totals
