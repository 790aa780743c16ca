"""The trained model logged on its run as one MLflow model with two flavours: `pytorch`
(`mlflow.pytorch.load_model`: the torch module, behind its preprocessing) and
`python_function` (`mlflow.pyfunc.load_model`: a table's columns by name, class names and
probabilities; `torch_pyfunc.py` is its loader, shipped inside the model). It is saved by
this module as an MLflow custom flavour (`Model.log(flavor=...)` calls `save_model`)."""

from __future__ import annotations

import logging
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from deeprig.tracking import torch_pyfunc
from deeprig.tracking.runs import fluent_api_on
from deeprig.tracking.tags import Tag

if TYPE_CHECKING:
    from mlflow.models import Model, ModelSignature
    from torch import nn

    from deeprig.tracking.runs import RunRecorder


@dataclass(frozen=True)
class ModelInterface:
    """What the pyfunc flavour reads and returns (torch_pyfunc.py's config): its signature
    is made from it."""

    inputs: Literal["columns", "text", "tensor"]
    input_shape: tuple[int, ...]
    input_dtype: str = "float32"  # "int64": token ids
    columns: tuple[str, ...] = ()  # the feature columns, or the text column
    # A classifier's label values in class-id order (names, or the ids themselves).
    classes: tuple[str, ...] | tuple[int, ...] | None = None
    # A regression's values a row: 1, or a forecast's steps (a (rows, outputs) tensor).
    outputs: int = 1

    def config(self) -> dict[str, Any]:
        """As the flavour records it (plain YAML values)."""
        fields = asdict(self)
        fields["input_shape"] = list(self.input_shape)
        fields["columns"] = list(self.columns)
        fields["classes"] = list(self.classes) if self.classes is not None else None
        return fields

    def signature(self) -> ModelSignature:
        import numpy as np
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec
        from mlflow.types.schema import AnyType

        if self.inputs == "columns":
            # Named, so MLflow picks them by name (in any order, extra columns dropped); of
            # any type, so a CSV's whole numbers (int64, which MLflow will not cast to a
            # double) are read too: the loader casts every number to float32, as training did.
            inputs = Schema([ColSpec(AnyType(), name) for name in self.columns])
        elif self.inputs == "text":
            inputs = Schema([ColSpec("string", self.columns[0])])
        else:
            inputs = Schema([TensorSpec(np.dtype(self.input_dtype), (-1, *self.input_shape))])
        if self.classes is None and self.outputs > 1:
            return ModelSignature(
                inputs, Schema([TensorSpec(np.dtype("float32"), (-1, self.outputs))])
            )
        if self.classes is None:
            return ModelSignature(inputs, Schema([ColSpec("float")]))
        kind = "string" if any(isinstance(c, str) for c in self.classes) else "long"
        proba = ParamSchema([ParamSpec("proba", "boolean", False)])
        return ModelSignature(inputs, Schema([ColSpec(kind)]), proba)

    def example(self, sample: Any) -> Any:
        """The pyfunc's input example, made of the network's sample input."""
        import pandas as pd

        if self.inputs == "columns":
            flat = sample.reshape(len(sample), -1).astype("float64")
            return pd.DataFrame(flat, columns=list(self.columns))
        if self.inputs == "text":
            return pd.DataFrame({self.columns[0]: ["an example", "another example"]})
        return sample


def log_torch_model(
    recorder: RunRecorder,
    model: nn.Module,
    interface: ModelInterface,
    sample_input: Any,
    register_as: str | None,
    code_paths: list[str] | None = None,
    exportable: bool = True,
    pip_requirements: list[str] | None = None,
) -> str:
    """Log `model` on the recorder's run as `model` (registered when asked). The pytorch
    flavour is torch.export's format ("pt2": it loads without the model's code); a model
    torch.export cannot trace is pickled instead, with `code_paths` (the modules it needs).
    `exportable` False pickles it straight away (a model with methods beyond `forward`,
    e.g. one that tokenises). Tags the format; returns it."""
    import mlflow
    import torch
    from mlflow.models import Model

    model.eval()
    options: dict[str, Any] = dict(
        artifact_path=None,  # (deprecated for `name`, but still positional)
        name="model",
        flavor=sys.modules[__name__],
        flavor_name="pytorch",
        registered_model_name=register_as,
        pytorch_model=model,
        interface=interface,
        torch_example=sample_input[:2],
        signature=interface.signature(),
        input_example=interface.example(sample_input[:2]),
        # Declared, not inferred: inference imports and probes every package.
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", *(pip_requirements or [])],
    )
    # A logged model goes to the active run's experiment: the fluent run is the way to
    # name it. Leaving this block marks the run FINISHED, so the runner calls this last,
    # and re-marks it on any failure.
    with (
        fluent_api_on(recorder.target.uri),
        mlflow.start_run(run_id=recorder.stored_id),
        warnings.catch_warnings(),
    ):
        # torch.export warns about RNN weight attributes; the exported model is correct.
        warnings.simplefilter("ignore", UserWarning)
        try:
            if not exportable:
                raise TypeError("logged pickled by request")
            Model.log(serialization_format="pt2", code_paths=[], **options)
            used = "pt2"
        except Exception:  # torch.export cannot trace it (data-dependent control flow)
            # (MLflow warns that pickles run code when loaded: they are this run's own)
            quiet = logging.getLogger("mlflow.pytorch")
            level, quiet.level = quiet.level, logging.ERROR
            try:
                Model.log(serialization_format="pickle", code_paths=code_paths or [], **options)
            finally:
                quiet.setLevel(level)
            used = "pickle"
    recorder.set_tags({Tag.MODEL_FORMAT: used})
    return used


def save_model(
    path: str,
    mlflow_model: Model,
    pytorch_model: nn.Module,
    interface: ModelInterface,
    torch_example: Any,
    serialization_format: str,
    code_paths: list[str],
    signature: ModelSignature,
    input_example: Any,
    pip_requirements: list[str],
) -> None:
    """The custom flavour's save (MLflow's `Model.log` calls it): mlflow.pytorch saves the
    network with a tensor signature (torch.export traces the example); the pyfunc flavour
    is then torch_pyfunc's, and the model's signature and example are the pyfunc's."""
    import mlflow.pytorch
    import torch
    from mlflow import pyfunc
    from mlflow.models import infer_signature
    from mlflow.models.utils import _save_example
    from mlflow.utils.environment import _CONDA_ENV_FILE_NAME, _PYTHON_ENV_FILE_NAME

    with torch.no_grad():
        torch_output = pytorch_model(torch.as_tensor(torch_example)).numpy()
    mlflow.pytorch.save_model(
        pytorch_model,
        path,
        mlflow_model=mlflow_model,
        serialization_format=serialization_format,
        signature=infer_signature(torch_example, torch_output),
        input_example=torch_example,
        code_paths=[*code_paths, torch_pyfunc.__file__],
        pip_requirements=pip_requirements,
    )
    mlflow_model.signature = signature
    _save_example(mlflow_model, input_example, path)  # (MLflow's flavours save theirs so)
    pyfunc.add_to_model(
        mlflow_model,
        loader_module=Path(torch_pyfunc.__file__).stem,
        code="code",
        conda_env=_CONDA_ENV_FILE_NAME,
        python_env=_PYTHON_ENV_FILE_NAME,
        model_config=interface.config(),
    )
    mlflow_model.save(str(Path(path) / "MLmodel"))
