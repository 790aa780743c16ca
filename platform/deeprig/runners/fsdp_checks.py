"""The pre-flight of `scaling.strategy: fsdp` and sharded checkpoints: every combination
that cannot work is refused before Ray starts, with the field and the fix."""

from __future__ import annotations

import difflib

from deeprig.data.info import DataInfo
from deeprig.spec.errors import Problem
from deeprig.spec.train import FSDPSpec, TrainSpec


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
    """Class names `fsdp.shard` lists that the model does not contain (built on the meta
    device: no memory, no weights)."""
    import torch

    from deeprig.models import build_model
    from deeprig.training.sharding import module_class_names

    assert spec.model is not None
    try:
        with torch.device("meta"):
            model = build_model(spec.model, data.input_shape, data.num_outputs, data.vocab_size)
    except Exception:  # (the model's own check reports why it cannot be built)
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
