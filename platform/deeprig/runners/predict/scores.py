"""A labelled input's scores, accumulated batch by batch as the rows stream to the output:
the scores a train job reports on validation, in one pass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Scores:
    """A labelled input's scores, accumulated batch by batch: a train job's validation
    scores (accuracy, f1_macro, auc for two classes / rmse, mae; a forecast's at its last
    step, and its means over the steps)."""

    classes: list[Any] | None
    rows: int = 0
    unknown: int = 0  # labels that are no class of the model's
    # A regression's, one per value of a row (a forecast's steps): the sums of squared and
    # absolute errors, and the rows scored.
    squared: Any = 0.0
    absolute: Any = 0.0
    scored: Any = 0
    _class_scores: Any = None

    def add(self, labels: Any, predictions: Any, probabilities: Any | None) -> None:
        """A batch's true answers and predictions: (rows,), or a forecast's (rows, steps)."""
        import numpy as np

        if self.classes is None:
            # (a label that is missing, None: a step past the series' end, is not scored)
            truth = np.asarray(labels, np.float64).reshape(len(labels), -1)
            known = ~np.isnan(truth)
            error = np.asarray(predictions, np.float64).reshape(truth.shape) - truth
            error = np.where(known, error, 0.0)
            self.rows += int(known.any(axis=1).sum())
            self.scored = self.scored + known.sum(axis=0)
            self.squared = self.squared + (error**2).sum(axis=0)
            self.absolute = self.absolute + np.abs(error).sum(axis=0)
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
            from deeprig.regression import regression_errors

            counts = self.scored.tolist()
            return regression_errors(self.squared.tolist(), self.absolute.tolist(), counts), None
        metrics, confusion = self._class_scores.compute(world_size=1)
        correct = sum(confusion[i][i] for i in range(len(confusion)))
        metrics = {"accuracy": correct / self.rows, **metrics}
        if self.unknown:
            metrics["rows_unknown_label"] = float(self.unknown)
        return metrics, confusion
