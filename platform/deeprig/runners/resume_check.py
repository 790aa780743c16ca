"""`--resume` of a train job: the checkpoint Ray Train would continue from holds the model
this spec builds (the same parameter names and shapes), checked before Ray starts. A spec
whose model or data changed since is refused naming the field that changed: otherwise a
worker would fail loading it (a sharded checkpoint deep inside DCP), after Ray started."""

from __future__ import annotations

import logging
from typing import Any

from deeprig.data.info import DataInfo
from deeprig.spec.errors import Problem
from deeprig.spec.train import TrainSpec
from deeprig.training.state import TrainState


def resumed_checkpoint_problems(
    spec: TrainSpec, data: DataInfo | None, run_folder: str
) -> list[Problem]:
    """What stops the latest checkpoint of the Ray Train run at `run_folder` loading into
    this spec's model; nothing when it has none yet, or the user's loop reads its own."""
    if spec.model is None or data is None:
        return []
    found = _latest_checkpoint(run_folder)
    if found is None:
        return []
    path, state = found
    saved_spec = TrainSpec.model_validate(state.spec)
    assert saved_spec.model is not None  # (deeprig's loop wrote it: it had a model)
    here = _shapes(spec.model, data.input_shape, data.num_outputs, data.vocab_size)
    there = _shapes(saved_spec.model, state.input_shape, state.num_outputs, state.vocab_size)
    if here is None or there is None or here == there:
        return []  # (a model that cannot be built is the model check's to report)
    name = next(n for n in sorted(here.keys() | there.keys()) if here.get(n) != there.get(n))
    field, fix = _what_changed(spec, saved_spec, state, data)
    return [
        Problem(
            field,
            f"the checkpoint --resume continues from ({path}) holds another model: its "
            f"{name} is {_shape(there.get(name))}, this spec's {_shape(here.get(name))}; "
            f"{fix}, or run without --resume to start a new run",
        )
    ]


def _latest_checkpoint(run_folder: str) -> tuple[str, TrainState] | None:
    """The checkpoint Ray Train restores a run from (its latest), read without Ray."""
    from ray.train import Result

    # (Train's INFO that it found the run's snapshot is what a resume expects)
    train_logger = logging.getLogger("ray.train")
    level = train_logger.level
    train_logger.setLevel(logging.WARNING)
    try:
        checkpoint = Result.from_path(run_folder).checkpoint
    except Exception:  # (no checkpoint reported yet, or storage not readable from here:
        return None  # Ray Train starts afresh or reports it)
    finally:
        train_logger.setLevel(level)
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        return checkpoint.path, TrainState.load(directory)


def _shapes(
    model_config: Any, input_shape: tuple[int, ...], outputs: int, vocab: int | None
) -> dict[str, tuple[int, ...]] | None:
    """Each parameter's and buffer's shape, the model built on the meta device (no memory)."""
    import torch

    from deeprig.models import build_model

    try:
        with torch.device("meta"):
            model = build_model(model_config, input_shape, outputs, vocab)
    except Exception:
        return None
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def _shape(shape: tuple[int, ...] | None) -> str:
    return "missing" if shape is None else str(tuple(shape))


def _what_changed(
    spec: TrainSpec, saved: TrainSpec, state: TrainState, data: DataInfo
) -> tuple[str, str]:
    """(the field path, the fix): the first model setting that differs from the run's, else
    the data's shape."""
    assert spec.model is not None and saved.model is not None
    now, then = spec.model.model_dump(mode="json"), saved.model.model_dump(mode="json")
    for key in sorted(now.keys() | then.keys()):
        if now.get(key) != then.get(key):
            return f"model.{key}", f"set it back to {then.get(key)!r}, as the run was trained"
    return "data", (
        f"its samples were {state.input_shape} with {state.num_outputs} outputs, this data's "
        f"{data.input_shape} with {data.num_outputs}: resume with the data it was trained on"
    )
