"""The `python_function` flavour of the torch model deeprig logs: what
`mlflow.pyfunc.load_model(uri).predict(data)` runs. A copy of this file travels in the
logged model's `code/` folder, and MLflow imports it from there as its loader module, so it
imports nothing of deeprig or of the user's code: numpy, pandas, torch and MLflow only.

The model's `config` (its pyfunc flavour's model_config, written when it was logged) says
what it reads and returns:
- `inputs`: `columns` (a table: the feature columns picked by name, numbers of any type
  cast to float32 as in training), `text` (a column of sentences, tokenised by the model
  itself) or `tensor` (arrays in each sample's shape);
- `columns`: the feature columns, or the text column;
- `input_shape`, `input_dtype`: one sample as the network reads it;
- `classes`: a classifier's label values in class-id order (None: a regression). A
  classifier returns them, one per row, or with `params={"proba": True}` a DataFrame of
  probabilities with one column per class; a regression one value per row, a forecast of
  several steps (`outputs`) an array of (rows, steps).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _load_pyfunc(path: str, model_config: dict[str, Any] | None = None) -> TorchPyfunc:
    """MLflow's hook for a loader module: `path` is the model's folder, whose `pytorch`
    flavour holds the network (torch.export format, or pickled with its code)."""
    import mlflow.pytorch

    return TorchPyfunc(mlflow.pytorch.load_model(path), model_config or {})


class TorchPyfunc:
    """The torch model behind MLflow's pyfunc interface (predict(data, params))."""

    def __init__(self, model: Any, config: dict[str, Any]):
        self.model = model
        self.inputs: str = config.get("inputs", "tensor")
        self.columns: list[str] = list(config.get("columns") or [])
        self.input_shape = tuple(config.get("input_shape") or ())
        self.input_dtype: str = config.get("input_dtype", "float32")
        classes = config.get("classes")
        self.classes: list[Any] | None = list(classes) if classes is not None else None

    def get_raw_model(self) -> Any:
        """The torch module (MLflow's name for the unwrapped model)."""
        return self.model

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        import torch

        with torch.no_grad():
            output = self.model(self._tensor(data))
        index = data.index if hasattr(data, "index") and hasattr(data, "columns") else None
        if self.classes is None:
            values = output.numpy()
            return values[:, 0] if values.ndim == 2 and values.shape[1] == 1 else values
        probabilities = output.softmax(dim=1).numpy()
        if (params or {}).get("proba"):
            import pandas as pd

            names = [str(c) for c in self.classes]
            return pd.DataFrame(probabilities, columns=names, index=index)
        return np.asarray(self.classes)[probabilities.argmax(axis=1)]

    def _tensor(self, data: Any):
        import pandas as pd
        import torch

        # (MLflow has checked `data` against the signature: a table is a DataFrame holding
        # the named columns)
        if self.inputs == "text":
            sentences = data[self.columns[0]] if isinstance(data, pd.DataFrame) else data
            return self.model.tokenize([str(s) for s in sentences])
        if self.inputs == "columns":
            frame = data
            for name in self.columns:
                if not pd.api.types.is_numeric_dtype(frame[name]):
                    raise ValueError(f"column {name!r} holds {frame[name].dtype}, not numbers")
            values = frame[self.columns].to_numpy(dtype=np.float32)
        else:
            values = np.asarray(data.to_numpy() if isinstance(data, pd.DataFrame) else data)
            values = values.astype(self.input_dtype, copy=False)
        return torch.from_numpy(
            np.ascontiguousarray(values.reshape(len(values), *self.input_shape))
        )
