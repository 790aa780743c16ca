"""One model's loss and scores over a split: each epoch's validation on every rank, and
the best model's test set on the driver at the end."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from deeprig.data.shard import ShardBatches
from deeprig.training.epoch import autocast, loss_of
from deeprig.training.scores import ClassScores


class NextTokenLoss(nn.Module):
    """Cross-entropy of (batch, steps, vocabulary) logits against (batch, steps) next
    tokens: each row's mean over its steps, summed over rows (as the other losses are
    summed over rows), so a split's loss per row is its loss per token."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        summed = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")
        return summed / targets.shape[1]


def loss_function(task: str) -> nn.Module:
    """Summed over a batch: the loop divides by rows itself (ranks' shards differ)."""
    if task == "classification":
        return nn.CrossEntropyLoss(reduction="sum")
    if task == "language_model":
        return NextTokenLoss()
    return nn.MSELoss(reduction="sum")


def split_metrics(
    task: str, loss_sum: float, hits: float, rows: float, abs_sum: float, target_std: float
) -> dict[str, float]:
    """A split's loss and its task's scores (names without the split's prefix) from its
    totals summed over every rank: accuracy; perplexity, exp(loss per token); or the
    regression errors in the target's own units (a scaled target is scaled back)."""
    loss = loss_sum / max(rows, 1)
    metrics = {"loss": loss}
    if task == "classification":
        metrics["accuracy"] = hits / max(rows, 1)
    elif task == "language_model":
        metrics["perplexity"] = math.exp(min(loss, 700.0))  # (past e^700: a float's end)
    else:
        metrics["rmse"] = loss**0.5 * target_std
        metrics["mae"] = abs_sum / max(rows, 1) * target_std
    return metrics


@torch.no_grad()
def evaluate(
    model,
    batches: ShardBatches,
    loss_fn,
    scores: ClassScores | None,
    device,
    autocast_dtype,
    sharded: bool = False,
):
    """This rank's validation (loss sum, hits, rows, absolute error sum); `scores` gathers
    what F1, AUC and the confusion matrix need. `sharded`: the model is FSDP-sharded, its
    forward a collective that every rank runs as often (training/sharding.py)."""
    model.eval()
    totals = torch.zeros(4, device=device)
    classification = scores is not None
    rows = batches.epoch(0, shuffle=False)
    if sharded:
        from deeprig.training.sharding import lockstep

        rows = lockstep(rows, device)
    for x, y in rows:
        with autocast(device, autocast_dtype):
            out = model(x)
        totals[0] += loss_of(loss_fn, out, y, classification)
        if scores is not None:
            totals[1] += (out.argmax(dim=1) == y).sum()
            scores.update(out, y)
        elif not isinstance(loss_fn, NextTokenLoss):  # regression: its absolute error
            totals[3] += (out.float().reshape(-1) - y).abs().sum()
        totals[2] += len(y)
    return totals
