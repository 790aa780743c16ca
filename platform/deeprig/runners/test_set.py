"""The best model scored on a held-out test set (`data.test_path`), on the driver after
training: the same loss and scores as each epoch's validation, prefixed `test_`."""

from __future__ import annotations

import torch

from deeprig.data.shard import ShardBatches
from deeprig.training.evaluate import evaluate, loss_function
from deeprig.training.scores import ClassScores
from deeprig.training.state import TrainState


def score_test_set(
    state: TrainState, test_dataset
) -> tuple[dict[str, float], list[list[int]] | None]:
    """(test metrics, the test confusion matrix or None for regression)."""
    classification = state.task == "classification"
    cpu = torch.device("cpu")
    batches = ShardBatches(
        test_dataset,
        1024,
        cpu,
        torch.long if classification else torch.float32,
        in_memory=False,
        seed=0,
        input_dtype=torch.long if state.input_dtype == "int64" else torch.float32,
    )
    scores = ClassScores(state.num_outputs, cpu) if classification else None
    model = state.rebuild_model()
    loss_sum, hits, rows, abs_sum = evaluate(
        model, batches, loss_function(classification), scores, cpu, None
    ).tolist()
    metrics = {"test_loss": loss_sum / max(rows, 1)}
    if scores is None:
        std = state.preprocessing().target_std or 1.0
        metrics |= {
            "test_rmse": (loss_sum / max(rows, 1)) ** 0.5 * std,
            "test_mae": abs_sum / max(rows, 1) * std,
        }
        return metrics, None
    extra, confusion = scores.compute(world_size=1)
    metrics["test_accuracy"] = hits / max(rows, 1)
    metrics |= {f"test_{name}": value for name, value in extra.items()}
    return metrics, confusion
