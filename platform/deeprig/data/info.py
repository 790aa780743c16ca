"""What the driver knows about a data set before any worker starts (`DataInfo`), and the
error a data spec that cannot be read raises (`DataProblem`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

# language_model: a token id to predict at every position of a window of token ids.
Task = Literal["classification", "regression", "language_model"]
InputDtype = Literal["float32", "int64"]  # features, or token ids


class DataProblem(ValueError):
    """A data spec that cannot be read; `path` is the spec field to fix."""

    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path = path

    def __reduce__(self):  # Ray copies and pickles exceptions raised in its tasks
        return (DataProblem, (self.path, str(self)))


@dataclass(frozen=True)
class DataInfo:
    input_shape: tuple[int, ...]
    task: Task
    num_outputs: int  # classes, or a regression's values: 1, a forecast's steps
    num_rows: int
    num_val: int
    input_dtype: InputDtype = "float32"
    # Token ids index an embedding of this many rows (text data); None: features.
    vocab_size: int | None = None
    # Class names, in id order, where the labels were names (folders, strings).
    classes: tuple[str, ...] | None = None

    @property
    def num_train(self) -> int:
        return self.num_rows - self.num_val

    @property
    def bytes_per_row(self) -> int:
        return 4 * math.prod(self.input_shape) + 8

    def class_names(self) -> list[str]:
        """Every class's name, in id order ("0", "1", ... where labels were ids)."""
        return list(self.classes) if self.classes else [str(i) for i in range(self.num_outputs)]


@dataclass(frozen=True)
class Fitted:
    """What the driver fitted on the training split (never on validation or test rows),
    applied to every split, recorded in the run, saved in checkpoints and in the logged
    model so it reads raw inputs. Plain values only: it travels to workers and into
    `TrainState`."""

    # Per feature column (tabular) or per channel (images): inputs become (x - mean) / std.
    input_mean: tuple[float, ...] | None = None
    input_std: tuple[float, ...] | None = None
    # How the statistics broadcast over one sample: (C, 1, 1) per image channel, the
    # sample's shape per tabular column, (1, columns) per series.
    stats_shape: tuple[int, ...] = ()
    # Regression targets scaled the same way (time series), one per output (a forecast's
    # steps): metrics are reported unscaled.
    target_mean: tuple[float, ...] | None = None
    target_std: tuple[float, ...] | None = None
    tokenizer_json: str | None = None  # a Hugging Face tokenizer, serialised
    # Metrics of an obvious baseline on the validation split (time series: persistence).
    baseline: tuple[tuple[str, float], ...] = ()
    fitted_on_rows: int = 0  # training rows the statistics came from
    sample_rate: int | None = None  # audio: the rate every clip was read at (Hz)

    def broadcast_stats(self):
        """(mean, std) as float32 arrays of shape (1, *stats_shape)."""
        import numpy as np

        assert self.input_mean is not None and self.input_std is not None
        shape = (1, *self.stats_shape)
        return (
            np.asarray(self.input_mean, dtype=np.float32).reshape(shape),
            np.asarray(self.input_std, dtype=np.float32).reshape(shape),
        )

    def record(self) -> dict[str, object]:
        """What the run records of it (preprocessing.json), without the tokenizer's body."""
        out: dict[str, object] = {"fitted_on_rows": self.fitted_on_rows}
        if self.input_mean is not None:
            out |= {"input_mean": list(self.input_mean), "input_std": list(self.input_std or ())}
        if self.target_mean is not None:
            out |= {
                "target_mean": list(self.target_mean),
                "target_std": list(self.target_std or ()),
            }
        if self.baseline:
            out["baseline"] = dict(self.baseline)
        if self.sample_rate is not None:
            out["sample_rate"] = self.sample_rate
        return out


def num_val_rows(num_rows: int, val_fraction: float) -> int:
    return max(1, round(num_rows * val_fraction))
