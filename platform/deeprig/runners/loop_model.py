"""The network a user's own loop trained, logged as its run's MLflow model like any train
job's: the spec's `model: {name: custom, target, args}` rebuilt on the driver and given
the state dict the best checkpoint holds (what Ray's PyTorch guide saves: a dict with the
weights under a key, `torch.save({"model": model.state_dict(), ...}, "checkpoint.pt")`,
or the state dict itself, `torch.save(model.state_dict(), "model.pt")`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from deeprig.data.info import DataInfo
from deeprig.spec.model import CustomModelConfig
from deeprig.spec.train import TrainSpec

if TYPE_CHECKING:
    from ray.train import Checkpoint

    from deeprig.tracking.runs import RunRecorder
    from deeprig.usercode import CodeBundle

# The files a loop's checkpoint may hold its weights in (torch.save's usual suffixes).
WEIGHT_FILES = ("*.pt", "*.pth")
# DistributedDataParallel's prefix of every key, when the loop saved the wrapped model.
DDP_PREFIX = "module."


def state_dict_in(folder: str | Path, key: str) -> tuple[dict[str, Any] | None, str]:
    """(the model's state dict in a checkpoint folder the user's loop wrote, the file and
    key it came from): the first file under WEIGHT_FILES that holds a mapping of tensors
    under `key`, or is one; (None, what was looked at) when none does."""
    import torch

    files = sorted(p for pattern in WEIGHT_FILES for p in Path(folder).rglob(pattern))
    for file in files:
        saved = torch.load(file, map_location="cpu", weights_only=False)  # the loop's own file
        for where, candidate in ((f"{file.name}[{key!r}]", _get(saved, key)), (file.name, saved)):
            if _is_state_dict(candidate):
                weights = {k.removeprefix(DDP_PREFIX): v for k, v in candidate.items()}
                return weights, where
    looked = ", ".join(p.name for p in files) or f"no {' or '.join(WEIGHT_FILES)} file"
    return None, looked


def _get(saved: Any, key: str) -> Any:
    return saved.get(key) if isinstance(saved, Mapping) else None


def _is_state_dict(value: Any) -> bool:
    import torch

    return (
        isinstance(value, Mapping)
        and bool(value)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())
    )


def log_loop_model(
    recorder: RunRecorder,
    spec: TrainSpec,
    data: DataInfo | None,
    code: CodeBundle | None,
    checkpoint: Checkpoint,
    console: Console,
) -> None:
    """The spec's custom model with the best checkpoint's weights, logged as the run's
    model (deeprig fills `num_outputs` and `input_shape` from the data, as for its own
    loop; without `data:` the args are taken as written). A checkpoint without the
    weights, or weights that do not fit the model, is said on the console: the run's
    training stands, without a model."""
    import numpy as np

    from deeprig.tracking.logged_model import ModelInterface, log_torch_model
    from deeprig.usercode.checks import build_custom_model

    assert spec.loop is not None and isinstance(spec.model, CustomModelConfig)
    key = spec.loop.model_key
    with checkpoint.as_directory() as folder:
        weights, where = state_dict_in(folder, key)
    if weights is None:
        console.print(
            f"[yellow]no model logged: the best checkpoint holds no state dict under "
            f"{key!r} (loop.model_key) nor as a whole file ({where})[/]"
        )
        return
    if data is not None:
        shape, dtype = data.input_shape, data.input_dtype
        net = build_custom_model(spec.model, shape, data.num_outputs, data.vocab_size)
    else:
        given = spec.loop.input_shape or spec.model.args["input_shape"]
        shape, dtype = tuple(given), "float32"
        net = build_custom_model(spec.model, None, None)
    try:
        net.load_state_dict(weights)
    except RuntimeError as exc:  # keys or shapes that are not this network's
        first = str(exc).strip().splitlines()[:3]
        console.print(
            f"[yellow]no model logged: the weights in {where} do not fit {spec.model.target} "
            f"with model.args: {' '.join(first)}[/]"
        )
        return
    sample = np.zeros((2, *shape), dtype=np.int64 if dtype == "int64" else np.float32)
    interface = ModelInterface("tensor", shape, dtype)
    paths = code.py_modules() if code else None
    used = log_torch_model(recorder, net, interface, sample, spec.tracking.register_as, paths)
    console.print(f"[dim]model logged from the best checkpoint's {where} ({used})[/]")
