"""Which metrics a train job reports (what checkpoint.metric, early_stopping.metric and a
search's metric may name) and which of them its closing table shows."""

from __future__ import annotations

from deeprig.data.info import DataInfo
from deeprig.spec.data import TimeseriesData
from deeprig.spec.train import TrainSpec

# What the closing table shows, in this order, of the best checkpoint's metrics.
CLOSING_METRICS = (
    "epoch",
    "train_loss",
    "val_loss",
    "val_accuracy",
    "val_f1_macro",
    "val_auc",
    "test_accuracy",
    "test_f1_macro",
    "val_rmse",
    "val_rmse_persistence",
    "val_mae",
    "val_mae_persistence",
    "val_perplexity",
    "val_perplexity_unigram",
    "val_perplexity_bigram",
    "samples_per_s",
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


def reported_metrics(spec: TrainSpec, data: DataInfo) -> set[str]:
    """What a job reports every epoch (the user's loop: what its spec says it reports)."""
    if spec.loop is not None:
        return set(spec.loop.metrics)
    reported = {"train_loss", "val_loss", "epoch_time_s", "samples_per_s", "lr", "epoch"}
    if data.task == "classification":
        reported |= {"val_accuracy", "val_f1_macro"} | (
            {"val_auc"} if data.num_outputs == 2 else set()
        )
    elif data.task == "language_model":  # beside its n-gram baselines (data/corpus.py)
        reported |= {"val_perplexity", "val_perplexity_unigram", "val_perplexity_bigram"}
    else:
        reported |= {"val_rmse", "val_mae"}
        if isinstance(spec.data, TimeseriesData):
            reported |= {"val_rmse_persistence", "val_mae_persistence"}
    return reported
