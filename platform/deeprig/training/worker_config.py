"""Everything a worker needs, decided on the driver and shipped once in the train config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from deeprig.data.info import DataInfo, Fitted
from deeprig.spec.train import TrainSpec
from deeprig.usercode import CodeBundle


class MetricsSink(Protocol):
    """Where rank 0 sends per-epoch metrics and tags (tracking.sink provides the real one;
    tracking.null's keeps nothing: tracking off, and every other rank)."""

    def log(self, metrics: dict[str, float], step: int) -> None: ...
    def log_step(self, metrics: dict[str, float], step: int) -> None: ...
    def tag(self, key: str, value: str) -> None: ...
    def flush(self) -> None: ...


@dataclass(frozen=True)
class WorkerConfig:
    spec: TrainSpec
    data: DataInfo
    threads_per_worker: int
    in_memory: bool
    run_id: str | None  # the MLflow run this job writes to; travels in checkpoints too
    sink: MetricsSink  # a NullSink when tracking is off
    code: CodeBundle | None = None  # the user's modules (code.paths), installed first
    fitted: Fitted = Fitted()  # what the driver fitted on the training split
    # split name -> (x, y), or an object-store reference to them: each worker takes its
    # share (data/shard.py); None: the splits are the session's Ray Datasets.
    arrays: dict[str, Any] | None = None
