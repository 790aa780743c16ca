"""The pre-flight of `scaling.strategy: fsdp` and sharded checkpoints: every combination
that cannot work is refused before Ray starts, with the field and the fix; and the memory a
worker will need under ddp and fsdp, a job that cannot fit refused the same way."""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable

from deeprig.cluster.resources import ClusterResources
from deeprig.data.info import DataInfo
from deeprig.spec.errors import Problem
from deeprig.spec.scaling import FSDPSpec
from deeprig.spec.train import TrainSpec
from deeprig.training.memory_estimate import (
    MemoryEstimate,
    fitting_workers,
    human_bytes,
)


def fsdp_problems(spec: TrainSpec, data: DataInfo | None) -> list[Problem]:
    scaling = spec.scaling
    if scaling.strategy != "fsdp":
        problems = []
        if scaling.fsdp != FSDPSpec():
            problems.append(
                Problem(
                    "scaling.fsdp", "read only with scaling.strategy: fsdp; add it or remove this"
                )
            )
        if spec.checkpoint.async_save:
            problems.append(
                Problem(
                    "checkpoint.async_save",
                    "only sharded checkpoints (scaling.strategy: fsdp) are written in the "
                    "background; remove it or shard the model",
                )
            )
        return problems
    if spec.loop is not None:
        return [
            Problem(
                "scaling.strategy",
                "fsdp shards the model of deeprig's own loop; your loop (loop.function) "
                "prepares its model itself: use strategy: ddp, or call fully_shard in it",
            )
        ]
    problems = []
    if scaling.use_gpu and scaling.mixed_precision == "fp16":
        problems.append(
            Problem(
                "scaling.mixed_precision",
                "fsdp computes in bf16 (float32 reductions); fp16 would need loss scaling "
                "across shards: use bf16 or auto",
            )
        )
    if scaling.fsdp.cpu_offload and not scaling.use_gpu:
        problems.append(
            Problem(
                "scaling.fsdp.cpu_offload",
                "offloads a GPU's shards to CPU memory; a CPU job's are there already: "
                "remove it, or set scaling.use_gpu: true",
            )
        )
    if isinstance(scaling.fsdp.shard, list) and data is not None and spec.model is not None:
        problems += _unknown_units(spec, data, scaling.fsdp.shard)
    return problems


def _unknown_units(spec: TrainSpec, data: DataInfo, names: list[str]) -> list[Problem]:
    """Class names `fsdp.shard` lists that the model does not contain."""
    from deeprig.training.sharding import module_class_names

    model = _meta_model(spec, data)
    if model is None:
        return []
    known = module_class_names(model)
    problems = []
    for name in names:
        if name in known:
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        problems.append(
            Problem(
                "scaling.fsdp.shard",
                f"the model has no module of class {name!r}; {hint}"
                f"(its classes: {', '.join(sorted(known))}), or use shard: auto",
            )
        )
    return problems


def fsdp_note(spec: TrainSpec) -> str:
    """What the summary line adds about sharding."""
    if spec.scaling.strategy != "fsdp":
        return ""
    if spec.scaling.num_workers == 1:
        return ", fsdp on 1 worker: nothing to shard with, the model trains whole"
    return f", fsdp over {spec.scaling.described()} workers"


def _meta_model(spec: TrainSpec, data: DataInfo):
    """The job's network built on the meta device (no memory, no weights), or None when it
    cannot be built (the model's own check reports why)."""
    import torch

    from deeprig.models import build_model

    assert spec.model is not None
    try:
        with torch.device("meta"):
            return build_model(spec.model, data.input_shape, data.num_outputs, data.vocab_size)
    except Exception:
        return None


def memory_estimate(spec: TrainSpec, data: DataInfo | None) -> MemoryEstimate | None:
    """A worker's tensors for this job (training/memory_estimate.py); None for a user's own
    loop, or a model that cannot be built."""
    if spec.model is None or data is None:
        return None
    model = _meta_model(spec, data)
    if model is None:
        return None
    import torch

    from deeprig.training.memory_estimate import estimate_memory
    from deeprig.training.sharding import family_units, fsdp_units

    if data.vocab_size is not None:  # token ids; 1, not the padding id 0
        sample = torch.ones(data.input_shape, dtype=torch.long)
    else:
        sample = torch.zeros(data.input_shape)
    units = fsdp_units(model, spec.scaling.fsdp.shard, family_units(spec.model))
    optim = spec.optim
    try:
        return estimate_memory(model, sample, optim.batch_size, units, optim.name, optim.momentum)
    except Exception:  # (a forward that fails is the model's dry run's to report)
        return None


def _worker_limit(
    spec: TrainSpec, resources: ClusterResources, cpus_per_worker: float
) -> tuple[Callable[[int], float], str] | None:
    """Bytes a worker can have at a given worker count, and where that comes from; None
    when not known (a GPU's memory is not, unless the spec says)."""
    scaling = spec.scaling
    if scaling.memory_per_worker is not None:
        given = float(scaling.memory_per_worker)
        return (lambda workers: given), "scaling.memory_per_worker"
    if scaling.use_gpu or not resources.node_memory:
        return None
    per_node = max(1, math.floor(resources.max_node_cpus / cpus_per_worker + 1e-9))
    memory = resources.node_memory
    where = f"{resources.where}'s {human_bytes(memory)} shared by its workers"
    return (lambda workers: memory / min(workers, per_node)), where


def memory_problems(
    spec: TrainSpec,
    estimate: MemoryEstimate | None,
    resources: ClusterResources,
    cpus_per_worker: float,
) -> list[Problem]:
    """The job refused when a worker's estimate exceeds the memory it can have (at the
    fewest workers an elastic job runs on), with the fsdp worker count that would fit."""
    known = _worker_limit(spec, resources, cpus_per_worker)
    if estimate is None or known is None:
        return []
    limit, where = known
    scaling = spec.scaling
    workers = scaling.min_workers
    needs = estimate.per_worker(scaling.strategy, workers)
    if needs <= limit(workers):
        return []
    said = (
        f"a worker needs ~{human_bytes(needs)} under {scaling.strategy} at {workers} "
        f"worker(s), more than the {human_bytes(limit(workers))} it can have ({where})"
    )
    fits = fitting_workers(estimate, limit, workers)
    if fits is None:
        fix = (
            "no fsdp worker count fits either: a worker still holds its largest unit whole "
            f"(~{human_bytes(estimate.largest_unit)}) and a batch's activations "
            f"(~{human_bytes(estimate.activations or 0)}): lower optim.batch_size, or shard "
            "finer units (scaling.fsdp.shard)"
        )
    else:
        fix = (
            f"use scaling.strategy: fsdp with scaling.num_workers: {fits} "
            f"(~{human_bytes(estimate.per_worker('fsdp', fits))} a worker)"
        )
    path = "scaling.strategy" if scaling.strategy == "ddp" else "scaling.num_workers"
    return [Problem(path, f"{said}; {fix}")]


def memory_note(spec: TrainSpec, estimate: MemoryEstimate | None) -> str:
    """Two lines of the summary: a worker's estimate under ddp and fsdp (at the spec's
    worker count, or 2 for a job of one), then what it is made of."""
    if estimate is None:
        return ""
    workers = max(spec.scaling.min_workers, 2)
    e = estimate
    return (
        f"memory a worker, est.: ddp {human_bytes(e.per_worker('ddp', workers))}, "
        f"fsdp over {workers} {human_bytes(e.per_worker('fsdp', workers))}\n"
        f"  params {human_bytes(e.parameters)}, grads {human_bytes(e.gradients)}, "
        f"{spec.optim.name} {human_bytes(e.optimizer)}, "
        + (
            f"a {e.batch_size}-row batch {human_bytes(e.activations)}"
            if e.activations is not None
            else "activations unmeasured"
        )
    )
