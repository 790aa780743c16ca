"""What every predict input reader is (`Reader`) and what it learns before Ray starts
(`PredictInput`); the readers themselves are one module per layout, and `readers.py` the
table that routes a model to its reader by the data source it trained on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from ray.data import Dataset

    from deeprig.runners.predict.model import PredictModel
    from deeprig.spec.predict import PredictSpec

# (row position in the batch, what went wrong) of each row a reader could not read
BadRows = list[tuple[int, str]]
PREDICTION = "prediction"  # the model's answer: one column, or one per forecast step
# The stream's blocks: each actor of the pool takes whole blocks, so there are several per
# actor (every actor busy from the start, a short tail), each of whole batches and at most
# MAX_BLOCK_BATCHES of them (memory bounded by the batch and the pool, not the file).
BLOCKS_PER_WORKER = 8
MAX_BLOCK_BATCHES = 64


def block_rows(rows: int, workers: int, batch_size: int) -> int:
    """Rows per block of a stream of `rows` rows to `workers` actors."""
    per_block = -(-rows // (workers * BLOCKS_PER_WORKER))
    batches = min(max(1, -(-per_block // batch_size)), MAX_BLOCK_BATCHES)
    return batches * batch_size


@dataclass(frozen=True)
class PredictInput:
    """What the driver learned of the input before Ray starts."""

    files: list[str]  # what the input's digest is made of
    columns: dict[str, str]  # the columns of the rows streamed: name -> Arrow type
    rows: int  # rows to score: the progress bar's total
    label: str | None  # the column holding the true answers, when the input has them
    passed: list[str]  # columns copied to the output beside each prediction
    key: str | None = None  # the column that names a row when it cannot be read
    labels: list[str] | None = None  # a folder's: each file's class folder
    steps: int = 1  # values the model answers a row: a forecast's, one per step ahead

    @property
    def predictions(self) -> list[str]:
        """The output's columns of the model's answers."""
        return step_columns(PREDICTION, self.steps)

    @property
    def label_columns(self) -> list[str]:
        """The input's columns of the true answers, matching `predictions`; none unlabelled."""
        return step_columns(self.label, self.steps) if self.label else []


def step_columns(name: str, steps: int) -> list[str]:
    """`name` for one value a row; for a forecast of several steps one column per step,
    name_1 ... name_<steps>, the value h steps after the row."""
    return [name] if steps == 1 else [f"{name}_{h}" for h in range(1, steps + 1)]


@dataclass(frozen=True)
class Reader:
    """How predict reads one layout of input, as a train job of the model read it."""

    # Before Ray starts: the input checked against the model (SpecError: exit 2).
    check: Callable[[PredictSpec, PredictModel], PredictInput]
    # The rows streamed to the actors (spec, model, input, CPUs of a read task), in
    # blocks of block_rows rows.
    rows: Callable[[PredictSpec, PredictModel, PredictInput, float], Dataset]
    # On an actor: a pandas batch of those rows -> what the model's pyfunc reads, and the
    # rows that could not be read (left out of what it reads).
    features: Callable[[PredictModel, pd.DataFrame], tuple[Any, BadRows]]
    # CPUs kept free for Ray Data's read tasks, each asking for that much (a table's);
    # 0: the rows are made on the driver (a folder's paths, a series' windows), so the
    # actors share every CPU.
    read_cpus: float = 0.0
