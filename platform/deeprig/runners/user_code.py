"""The train runner's pre-flight of user code (code.paths, a custom model, a custom data
function, the user's own loop): everything that can fail before Ray starts, all at once."""

from __future__ import annotations

from deeprig.data.info import DataInfo
from deeprig.spec.errors import Problem
from deeprig.spec.model import CustomModelConfig
from deeprig.spec.train import TrainSpec
from deeprig.usercode import CodeBundle, UserCodeProblem
from deeprig.usercode.checks import check_custom_model, check_loop_function


def collect_code(spec: TrainSpec) -> tuple[CodeBundle | None, list[Problem]]:
    """The bundle of code.paths, on this process's path (before the data function runs)."""
    if not spec.code.paths:
        return None, []
    try:
        bundle = CodeBundle.collect(spec.code.paths)
    except UserCodeProblem as exc:
        return None, [Problem(exc.path, str(exc))]
    bundle.activate()
    return bundle, []


def check_model_and_loop(spec: TrainSpec, data: DataInfo | None) -> list[Problem]:
    """A custom model's target, args and dry run on real samples (without the data, when it
    could not be read, or a loop has none: the target and args only); the loop's function."""
    problems: list[Problem] = []
    if isinstance(spec.model, CustomModelConfig):
        if data is None or spec.data is None:
            # (data that could not be read still fills num_outputs; no data fills nothing)
            outputs = 1 if spec.data is not None else None
            problems += check_custom_model(spec.model, None, outputs, None)
        else:
            from deeprig.data.sources import first_samples

            samples = first_samples(spec.data, data, 2)
            problems += check_custom_model(
                spec.model, data.input_shape, data.num_outputs, samples, data.vocab_size
            )
    if spec.loop is not None:
        problems += check_loop_function(spec.loop.function)
    return problems
