"""The raw-Tune floor of a search: the same trivial trials as benchmarks/search.py's (same
data, model, optimiser, epochs, the same CPUs a trial and trials at once), each a plain
loop reporting once an epoch, run by a bare `tune.Tuner` with actor reuse and nothing
else: no tracking, checkpoints or deeprig. What any search on Ray Tune pays on this
machine, to set deeprig's search beside. Called by benchmarks/search.py with Ray up.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any


def train_trivial(
    base: Any, lr: float | None = None, on_epoch: Callable[[int, float], None] | None = None
) -> None:
    """benchmarks/search.py's trivial trial as a plain loop: data, model, epochs, one torch
    thread; `on_epoch(epoch, val_loss)` after each epoch's validation."""
    import torch
    from deeprig.data import describe_data
    from deeprig.data.builtin import builtin_arrays, split_indices
    from deeprig.models import build_model
    from deeprig.training.optim import build_optimizer

    torch.set_num_threads(1)
    info = describe_data(base.data)
    x, y = builtin_arrays(base.data, base.seed)
    train_idx, val_idx = split_indices(len(y), base.data.val_fraction, base.seed)
    xt, yt = torch.as_tensor(x[train_idx]), torch.as_tensor(y[train_idx])
    xv, yv = torch.as_tensor(x[val_idx]), torch.as_tensor(y[val_idx])
    model = build_model(base.model, info.input_shape, info.num_outputs)
    optim = base.optim if lr is None else base.optim.model_copy(update={"lr": lr})
    opt = build_optimizer(optim, model.parameters())
    loss_fn = torch.nn.CrossEntropyLoss()
    for epoch in range(base.optim.num_epochs):
        order = torch.randperm(len(yt))
        for i in range(0, len(order), base.optim.batch_size):
            idx = order[i : i + base.optim.batch_size]
            opt.zero_grad()
            loss_fn(model(xt[idx]), yt[idx]).backward()
            opt.step()
        with torch.no_grad():
            val_loss = loss_fn(model(xv), yv).item()
        if on_epoch is not None:
            on_epoch(epoch, val_loss)


def trivial_trial(config: dict[str, Any]) -> None:
    """One trial: the plain loop, reporting each epoch to Tune."""
    from deeprig.spec.train import TrainSpec
    from ray import tune

    train_trivial(
        TrainSpec.model_validate(config["base"]),
        config["lr"],
        lambda epoch, val_loss: tune.report({"epoch": epoch + 1, "val_loss": val_loss}),
    )


def run_floor(
    base: dict[str, Any], num_samples: int, concurrency: int, resources: dict[str, float]
) -> float:
    """Wall seconds of the bare search (Ray already up): Tuner built to results back."""
    import ray.cloudpickle
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # This file is not importable on Ray's workers: ship the trial function by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as storage:
        tuner = tune.Tuner(
            tune.with_resources(trivial_trial, {k.lower(): v for k, v in resources.items()}),
            param_space={"base": base, "lr": tune.loguniform(0.001, 0.01)},
            tune_config=tune.TuneConfig(
                metric="val_loss",
                mode="min",
                num_samples=num_samples,
                search_alg=BasicVariantGenerator(max_concurrent=concurrency, random_state=0),
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(storage_path=storage, verbose=0),
        )
        results = tuner.fit()
        if results.errors:
            raise RuntimeError(f"raw-Tune floor: a trial failed: {results.errors[0]}")
    return time.perf_counter() - started
