"""Classification scores of a validation (or test) split, exact across DDP ranks.

Every rank adds its rows to a confusion matrix, and the matrices are summed with one
all-reduce: accuracy and macro F1 follow from it exactly. ROC AUC (two classes) needs every
row's score, so the scores are all-gathered (a validation split is small) and scored by
the rank-sum (Mann-Whitney) formula, ties averaged. This is what scikit-learn computes
(the unit tests hold it to `f1_score` and `roc_auc_score`); torchmetrics computes the same
but costs each worker ~1.3 s of imports (scipy.signal, its plotting) at start-up.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class ClassScores:
    """Accumulates (logits, labels) batches on one rank; `compute` combines every rank."""

    def __init__(self, num_classes: int, device: torch.device):
        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
        self._scores: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        predicted = logits.argmax(dim=1)
        flat = labels * self.num_classes + predicted
        self.confusion += torch.bincount(flat, minlength=self.num_classes**2).view_as(
            self.confusion
        )
        if self.num_classes == 2:
            self._scores.append(logits.float().softmax(dim=1)[:, 1])
            self._labels.append(labels)

    def compute(self, world_size: int) -> tuple[dict[str, float], list[list[int]]]:
        """(val-style metrics without the prefix, the confusion matrix) over every rank.
        Every rank must call it (it holds collectives when world_size > 1)."""
        confusion = self.confusion.clone()
        if world_size > 1:
            dist.all_reduce(confusion)
        metrics = {"f1_macro": macro_f1(confusion)}
        if self.num_classes == 2:
            device = confusion.device
            scores = torch.cat(self._scores) if self._scores else torch.zeros(0, device=device)
            labels = torch.cat(self._labels) if self._labels else torch.zeros(0, device=device)
            if world_size > 1:
                scores = _gather(scores, world_size)
                labels = _gather(labels.long(), world_size)
            auc = roc_auc(scores, labels)
            if auc is not None:
                metrics["auc"] = auc
        return metrics, confusion.tolist()


def macro_f1(confusion: torch.Tensor) -> float:
    """Mean F1 over the classes that occur as a label or a prediction (scikit-learn's
    macro average: a class in neither is left out, a class never predicted scores 0)."""
    confusion = confusion.double()
    true_positive = confusion.diagonal()
    support = confusion.sum(dim=1) + confusion.sum(dim=0)  # labels + predictions
    present = support > 0
    if not present.any():
        return 0.0
    f1 = 2 * true_positive[present] / support[present]
    return float(f1.mean())


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Area under the ROC curve of positive-class scores; None with one class only."""
    positives = labels == 1
    num_pos, num_neg = int(positives.sum()), int((~positives).sum())
    if num_pos == 0 or num_neg == 0:
        return None
    ranks = _average_ranks(scores.double())
    rank_sum = float(ranks[positives].sum())
    return (rank_sum - num_pos * (num_pos + 1) / 2) / (num_pos * num_neg)


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks, tied values sharing their average rank."""
    _, inverse, counts = torch.unique(values, sorted=True, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, dim=0).double()
    average = ends - (counts.double() - 1) / 2
    return average[inverse]


def _gather(rows: torch.Tensor, world_size: int) -> torch.Tensor:
    """Every rank's `rows` concatenated, shards of any length."""
    size = torch.tensor([len(rows)], device=rows.device)
    sizes = [torch.zeros_like(size) for _ in range(world_size)]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros(longest, dtype=rows.dtype, device=rows.device)
    padded[: len(rows)] = rows
    parts = [torch.zeros_like(padded) for _ in range(world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes, strict=True)])
