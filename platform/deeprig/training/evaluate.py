"""One model's loss and scores over a split: each epoch's validation on every rank, and
the best model's test set on the driver at the end."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from deeprig.data.shard import ShardBatches
from deeprig.regression import regression_errors
from deeprig.training.epoch import autocast, loss_of
from deeprig.training.scores import ClassScores


class NextTokenLoss(nn.Module):
    """Cross-entropy of (batch, steps, vocabulary) logits against (batch, steps) next
    tokens: each row's mean over its steps, summed over rows (as the other losses are
    summed over rows), so a split's loss per row is its loss per token."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        summed = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")
        return summed / targets.shape[1]


class StepMeanSquaredError(nn.Module):
    """Squared error summed over rows, each row's the mean over its outputs (a forecast's
    steps; one for any other regression), so every step weighs the same whatever the
    horizon."""

    def forward(self, out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # ((batch, 1) or (batch,) for one output, as the labels are)
        summed = F.mse_loss(out.reshape(targets.shape), targets, reduction="sum")
        return summed / targets[0].numel() if targets.dim() > 1 else summed


def loss_function(task: str) -> nn.Module:
    """Summed over a batch: the loop divides by rows itself (ranks' shards differ)."""
    if task == "classification":
        return nn.CrossEntropyLoss(reduction="sum")
    if task == "language_model":
        return NextTokenLoss()
    return StepMeanSquaredError()


def split_metrics(
    task: str, totals: Sequence[float], target_std: Sequence[float] | None = None
) -> dict[str, float]:
    """A split's loss and its task's scores (names without the split's prefix) from its
    totals (`evaluate`'s, summed over every rank): accuracy; perplexity, exp(loss per
    token); or the regression errors in the target's own units (a scaled target, each
    output by its `target_std`, is scaled back)."""
    loss_sum, hits, rows, *errors = totals
    loss = loss_sum / max(rows, 1)
    metrics = {"loss": loss}
    if task == "classification":
        metrics["accuracy"] = hits / max(rows, 1)
    elif task == "language_model":
        metrics["perplexity"] = math.exp(min(loss, 700.0))  # (past e^700: a float's end)
    else:
        outputs = len(errors) // 2
        metrics |= regression_errors(errors[:outputs], errors[outputs:], rows, target_std)
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
    outputs: int = 1,
):
    """This rank's validation totals: loss sum, hits, rows, then a regression's squared
    and absolute error sums of each of its `outputs` (`split_metrics` reads them); `scores`
    gathers what F1, AUC and the confusion matrix need. `sharded`: the model is
    FSDP-sharded, its forward a collective that every rank runs as often
    (training/sharding.py)."""
    model.eval()
    classification = scores is not None
    regression = not classification and not isinstance(loss_fn, NextTokenLoss)
    width = outputs if regression else 0
    totals = torch.zeros(3 + 2 * width, device=device)
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
        elif regression:
            error = out.float().reshape(len(y), width) - y.reshape(len(y), width)
            totals[3 : 3 + width] += (error**2).sum(dim=0)
            totals[3 + width :] += error.abs().sum(dim=0)
        totals[2] += len(y)
    return totals
