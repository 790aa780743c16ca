"""What a job records to when nothing records: `tracking.enabled: false` on the driver, and
every rank but 0 on the workers. The skeleton always hands a body a recorder and a sink;
these two take every call a body makes on them and keep nothing, so a body says what it
records once and never asks whether tracking is on. Imports no MLflow: a job with tracking
off never pays for it."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from deeprig.tracking.runs import ChildRun
    from deeprig.tracking.tags import RunStatus


class NullSink:
    """A metric sink (training/worker_config.py `MetricsSink`) that keeps nothing."""

    def log(self, metrics: dict[str, float], step: int, timestamp: float | None = None) -> None:
        pass

    def log_step(self, metrics: dict[str, float], step: int) -> None:
        pass

    def tag(self, key: str, value: str) -> None:
        pass

    def flush(self) -> None:
        pass


class NullRecorder:
    """`RunRecorder`'s interface, recording nothing: no run, no id, no page, no history.

    Falsy, so that the few steps whose only purpose is a record (drawing a figure, exporting
    the model, reading the run's history back) can be skipped rather than done for nothing."""

    run_id: None = None

    def __bool__(self) -> Literal[False]:
        return False

    def set_tags(self, tags: dict[str, str]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        pass

    def log_params(self, params: dict[str, str]) -> None:
        pass

    def log_directory(self, directory: str | Path, artifact_path: str) -> None:
        pass

    def log_code(self, files: dict[str, bytes], manifest: str, sha256: str) -> None:
        pass

    def finish(self, status: RunStatus) -> None:
        pass

    def page_url(self, ui_base: str | None = None) -> str | None:
        return None

    def child_runs(self) -> dict[str, ChildRun]:
        return {}

    def metrics_sink(self) -> NullSink:
        return NullSink()

    def system_metrics(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()
