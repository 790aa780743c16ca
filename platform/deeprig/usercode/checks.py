"""Pre-flight checks of user code, run on the driver before Ray starts: the model's target
and arguments, a dry run of the model on real samples, the loop function's signature."""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import numpy as np

from deeprig.spec.errors import Problem
from deeprig.usercode.signature import bind_arguments
from deeprig.usercode.targets import UserCodeProblem, resolve_target


def build_custom_model(
    cfg: Any,
    input_shape: tuple[int, ...] | None,
    num_outputs: int | None,
    vocab_size: int | None = None,
) -> Any:
    """The user's network, built with the spec's args and what deeprig fills from the data
    (`num_outputs` None: a user's loop without `data:`, nothing is filled).
    Raises UserCodeProblem (the problems were already reported by `check_custom_model` on
    the driver; a worker only meets them if its code differs)."""
    from torch import nn

    factory = resolve_target(cfg.target, "model.target")
    filled = _filled(num_outputs, input_shape, vocab_size)
    kwargs, problems = bind_arguments(factory, cfg.args, "model.args", filled)
    if problems:
        raise UserCodeProblem(problems[0].path, problems[0].message)
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise UserCodeProblem(
            "model.target", f"{cfg.target} gave a {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def _filled(
    num_outputs: int | None, input_shape: tuple[int, ...] | None, vocab_size: int | None
) -> dict[str, Any]:
    """What deeprig fills from the data into a model's parameters of these names (nothing
    without data: `num_outputs` None)."""
    if num_outputs is None:
        return {}
    filled: dict[str, Any] = {"num_outputs": num_outputs, "input_shape": tuple(input_shape or ())}
    if vocab_size is not None:  # token ids (text data)
        filled["vocab_size"] = vocab_size
    return filled


def check_custom_model(
    cfg: Any,
    input_shape: tuple[int, ...] | None,
    num_outputs: int | None,
    samples: np.ndarray | None,
    vocab_size: int | None = None,
) -> list[Problem]:
    """Every problem of a custom model: its target, its args, and a dry run on CPU (build,
    one forward and backward pass on two real samples, the output's shape). Without the
    data (`samples` None: it could not be read) only the target and the args."""
    import torch
    from torch import nn

    try:
        factory = resolve_target(cfg.target, "model.target")
    except UserCodeProblem as exc:
        return [Problem(exc.path, str(exc))]
    is_module_class = inspect.isclass(factory) and issubclass(factory, nn.Module)
    if inspect.isclass(factory) and not is_module_class:
        return [Problem("model.target", f"{cfg.target} is a class but not a torch.nn.Module")]
    if not callable(factory):
        return [Problem("model.target", f"{cfg.target} is neither an nn.Module nor a function")]
    filled = _filled(num_outputs, input_shape, vocab_size)
    _, problems = bind_arguments(factory, cfg.args, "model.args", filled)
    if problems or samples is None or input_shape is None:
        return problems
    try:
        with warnings.catch_warnings():  # its warnings belong to its run, not to validate
            warnings.simplefilter("ignore")
            model = build_custom_model(cfg, input_shape, num_outputs, vocab_size)
            tokens = np.issubdtype(np.asarray(samples).dtype, np.integer)
            x = torch.as_tensor(np.asarray(samples[:2], dtype=np.int64 if tokens else np.float32))
            out = model.train()(x)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(x), num_outputs):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            return [
                Problem(
                    "model",
                    f"forward(x) on a batch of {tuple(x.shape)} gave {shape}; it must return "
                    f"(batch, num_outputs) = ({len(x)}, {num_outputs})",
                )
            ]
        out.float().sum().backward()
    except UserCodeProblem as exc:
        return [Problem(exc.path, str(exc))]
    except Exception as exc:  # the user's code raised: its message, no traceback
        return [Problem("model", f"dry run on 2 samples failed: {type(exc).__name__}: {exc}")]
    return []


def check_loop_function(target: str) -> list[Problem]:
    """The loop function exists and takes one `config` argument, as Ray Train calls it."""
    try:
        function = resolve_target(target, "loop.function")
    except UserCodeProblem as exc:
        return [Problem(exc.path, str(exc))]
    if not callable(function):
        return [Problem("loop.function", f"{target} is not a function")]
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return []
    required = [p for p in parameters if p.default is inspect.Parameter.empty]
    positional = [
        p
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if len(required) != 1 or not positional:
        return [
            Problem(
                "loop.function",
                f"{target} must take one argument, the config dict (Ray Train calls "
                "fn(config)); it takes "
                f"({', '.join(p.name for p in parameters)})",
            )
        ]
    return []
