"""What the driver knows about a data set before any worker starts (`DataInfo`), and the
error a data spec that cannot be read raises (`DataProblem`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Task = Literal["classification", "regression"]


class DataProblem(ValueError):
    """A data spec that cannot be read; `path` is the spec field to fix."""

    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path = path


@dataclass(frozen=True)
class DataInfo:
    input_shape: tuple[int, ...]
    task: Task
    num_outputs: int  # classes, or 1 for regression
    num_rows: int
    num_val: int

    @property
    def num_train(self) -> int:
        return self.num_rows - self.num_val

    @property
    def bytes_per_row(self) -> int:
        return 4 * math.prod(self.input_shape) + 8


def num_val_rows(num_rows: int, val_fraction: float) -> int:
    return max(1, round(num_rows * val_fraction))
