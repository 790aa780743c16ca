"""A labelled input's scores, accumulated batch by batch as the rows stream to the output:
the scores a train job reports on validation, in one pass."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass
class Scores:
    """A labelled input's scores, accumulated batch by batch: a train job's validation
    scores (accuracy, f1_macro, auc for two classes / rmse, mae)."""

    classes: list[Any] | None
    rows: int = 0
    unknown: int = 0  # labels that are no class of the model's
    squared: float = 0.0
    absolute: float = 0.0
    _class_scores: Any = None

    def add(self, labels: Any, predictions: Any, probabilities: Any | None) -> None:
        import numpy as np

        if self.classes is None:
            # (a row whose label is missing, None: a forecast past the series' end, is
            # not scored)
            error = np.asarray(predictions, dtype=np.float64) - np.asarray(labels, np.float64)
            error = error[~np.isnan(np.asarray(labels, np.float64))]
            self.rows += len(error)
            self.squared += float((error**2).sum())
            self.absolute += float(np.abs(error).sum())
            return
        import torch

        from deeprig.training.scores import ClassScores

        if self._class_scores is None:
            self._class_scores = ClassScores(len(self.classes), torch.device("cpu"))
        ids = {str(c): i for i, c in enumerate(self.classes)}
        label_ids = np.array([ids.get(str(v), -1) for v in labels])
        known = label_ids >= 0
        self.unknown += int((~known).sum())
        self.rows += int(known.sum())
        if known.any():
            logits = torch.log(torch.as_tensor(np.asarray(probabilities)[known]) + 1e-12)
            self._class_scores.update(logits, torch.as_tensor(label_ids[known]))

    def compute(self) -> tuple[dict[str, float], list[list[int]] | None]:
        if self.rows == 0:
            return {}, None
        if self.classes is None:
            return {
                "rmse": math.sqrt(self.squared / self.rows),
                "mae": self.absolute / self.rows,
            }, None
        metrics, confusion = self._class_scores.compute(world_size=1)
        correct = sum(confusion[i][i] for i in range(len(confusion)))
        metrics = {"accuracy": correct / self.rows, **metrics}
        if self.unknown:
            metrics["rows_unknown_label"] = float(self.unknown)
        return metrics, confusion
