"""The best model scored on a held-out test set (`data.test_path`), on the driver after
training: the same loss and scores as each epoch's validation, prefixed `test_`."""

from __future__ import annotations

import torch

from deeprig.data.shard import ShardBatches
from deeprig.training.evaluate import evaluate, loss_function, split_metrics
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
    totals = evaluate(
        model, batches, loss_function(state.task), scores, cpu, None, outputs=state.num_outputs
    ).tolist()
    scored = split_metrics(state.task, totals, state.preprocessing().target_std)
    metrics = {f"test_{name}": value for name, value in scored.items()}
    if scores is None:
        return metrics, None
    extra, confusion = scores.compute(world_size=1)
    metrics |= {f"test_{name}": value for name, value in extra.items()}
    return metrics, confusion
