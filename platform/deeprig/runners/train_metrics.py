"""Which metrics a train job reports (what checkpoint.metric, early_stopping.metric and a
search's metric may name) and which of them its closing table shows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from deeprig.data.info import DataInfo
from deeprig.spec.data import AudioData, TimeseriesData
from deeprig.spec.train import TrainSpec
from deeprig.training.throughput import tokens_per_sample

# What the closing table shows, in this order, of the best checkpoint's metrics.
CLOSING_METRICS = (
    "epoch",
    "train_loss",
    "val_loss",
    "val_accuracy",
    "val_accuracy_logreg",
    "val_f1_macro",
    "val_auc",
    "test_accuracy",
    "test_f1_macro",
    "val_rmse",
    "val_rmse_persistence",
    "val_mae",
    "val_mae_persistence",
    "val_rmse_all_steps",
    "val_rmse_all_steps_persistence",
    "val_perplexity",
    "val_perplexity_unigram",
    "val_perplexity_bigram",
    "samples_per_s",
    "tokens_per_s",
    "model_flops_per_s",
    "mfu",
)


def score_metric(task: str) -> str:
    """The metric that says how good a train job's model is."""
    return {"classification": "val_accuracy", "language_model": "val_perplexity"}.get(
        task, "val_rmse"
    )


def closing_metrics(spec: TrainSpec) -> tuple[str, ...]:
    """What a train job's closing table shows of its best checkpoint's metrics: the user's
    loop's are those it reports, its checkpoint metric first."""
    if spec.loop is None:
        return CLOSING_METRICS
    first = ("epoch", "step", spec.checkpoint.metric)
    return tuple(dict.fromkeys([*first, *spec.loop.metrics]))


def reported_metrics(spec: TrainSpec, data: DataInfo | None) -> set[str]:
    """What a job reports every epoch (the user's loop: what its spec says it reports;
    only the user's loop may have no data)."""
    if spec.loop is not None:
        return set(spec.loop.metrics)
    assert data is not None
    reported = {"train_loss", "val_loss", "epoch_time_s", "samples_per_s", "lr", "epoch"}
    if tokens_per_sample(spec.data, data) is not None:
        reported.add("tokens_per_s")
    if data.task == "classification":
        reported |= {"val_accuracy", "val_f1_macro"} | (
            {"val_auc"} if data.num_outputs == 2 else set()
        )
        if isinstance(spec.data, AudioData):  # beside its logistic regression (data/audio.py)
            reported.add("val_accuracy_logreg")
    elif data.task == "language_model":  # beside its n-gram baselines (data/corpus.py)
        reported |= {"val_perplexity", "val_perplexity_unigram", "val_perplexity_bigram"}
    else:
        reported |= {"val_rmse", "val_mae"}
        if isinstance(spec.data, TimeseriesData):
            reported |= {"val_rmse_persistence", "val_mae_persistence"}
            if spec.data.horizon > 1:  # (val_rmse: at the last step; these: every step's mean)
                steps = {"val_rmse_all_steps", "val_mae_all_steps"}
                reported |= steps | {f"{name}_persistence" for name in steps}
    return reported


class LoopEpochsEnded:
    """The progress display's poll and history for the user's own loop. The display counts
    epochs ended by a report's `epoch`, as deeprig's loop reports it (from 1); a loop that
    counts from 0, as Ray's guide does, is shown one up (its report of epoch 0 ends the
    first epoch). The run records its epochs as given."""

    def __init__(
        self,
        poll: Callable[[], dict[str, float]],
        history: Callable[[], list[dict[str, float]]],
    ):
        self._poll = poll
        self._history = history
        self.offset: int | None = None  # known at the first report: 1 if it was epoch 0

    def poll(self) -> dict[str, float]:
        return self._shifted(dict(self._poll()))

    def history(self) -> list[dict[str, float]]:
        return [self._shifted(dict(row)) for row in self._history()]

    def _shifted(self, row: dict[str, Any]) -> dict[str, float]:
        if "epoch" in row:
            if self.offset is None:
                epochs = [r["epoch"] for r in self._history() if "epoch" in r]
                self.offset = 1 if min(epochs, default=row["epoch"]) == 0 else 0
            row["epoch"] += self.offset
        return row
