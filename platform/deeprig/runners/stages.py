"""Where a job's wall time goes, stage by stage, from the moment it started (a process's
first job: from the process's start, its imports included): imports, pre-flight checks,
Ray's start, the MLflow run, the data, the worker group, the epochs, and the wind-down.
Recorded on the run as `time.*` metrics and summed up in one line under the closing
table, so a user sees what a minute of start-up was spent on."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deeprig.tracking.runs import RunRecorder

# The start-up stages, in order, each `time.<name>_s` on the run.
STARTUP = ("imports", "checks", "ray_start", "run_create", "data", "workers_start")


_first_job_started = False


def job_started_at() -> float:
    """When this job began (wall clock). The first job of a process began with the process:
    its interpreter's and libraries' imports are start-up too. A later one in the same
    process (the Python API called again, a test suite) began now: counting from the
    process's start would add every job before it to its start-up."""
    global _first_job_started
    if _first_job_started:
        return time.time()
    _first_job_started = True
    import psutil

    return psutil.Process().create_time()


@dataclass
class StageClock:
    """Stage durations as they happen (wall clock, seconds)."""

    started_at: float = field(default_factory=job_started_at)
    seconds: dict[str, float] = field(default_factory=dict)
    last_epoch_end: float | None = None  # wall clock, once the epochs' record is read
    first_epoch_start: float | None = None  # (the same)
    _last: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        # Everything before the clock was made (the interpreter, deeprig's and its
        # libraries' imports, parsing the spec) is the imports stage.
        self.seconds.setdefault("imports", max(self._last - self.started_at, 0.0))

    _open: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.begin(name)
        try:
            yield
        finally:
            self.end(name)

    def begin(self, name: str) -> None:
        """A stage that is not one block (entering a context manager, say)."""
        self._open[name] = time.time()

    def end(self, name: str) -> None:
        began = self._open.pop(name)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.time() - began

    def read_epochs(self, recorder: RunRecorder, fit_started_at: float) -> None:
        """The epochs' wall-clock window, from when each epoch ended on its worker (the
        timestamps of the run's `epoch` metric)."""
        ends = recorder.metric_times("epoch")
        durations = recorder.metric_history("epoch_time_s")
        if ends and durations:
            self.training_window(fit_started_at, (ends[0][2], durations[0][1]), ends[-1][2])

    def training_window(
        self, fit_started_at: float, first_epoch: tuple[float, float], last_epoch_end: float
    ) -> None:
        """From the epochs' own record: (first epoch's end, its duration) and the last's end
        (wall clock). The worker group's start is what lies between fit() and epoch 1."""
        first_end, first_duration = first_epoch
        first_start = first_end - first_duration
        self.seconds["workers_start"] = max(first_start - fit_started_at, 0.0)
        self.seconds["train"] = max(last_epoch_end - first_start, 0.0)
        self.seconds["first_epoch_at"] = first_end - self.started_at
        self.first_epoch_start, self.last_epoch_end = first_start, last_epoch_end

    def finished(self) -> dict[str, float]:
        """Every stage as `time.*_s` metrics, with start-up (to the first epoch's start:
        the named stages and the moments between them) and the wind-down (from the last
        epoch's end to now), so start-up, epochs and wind-down add up to the total."""
        now = time.time()
        out = {f"time.{name}_s": self.seconds[name] for name in STARTUP if name in self.seconds}
        named = sum(self.seconds.get(name, 0.0) for name in STARTUP)
        if self.first_epoch_start is None:  # (no epochs' record: the named stages only)
            out["time.startup_s"] = named
        else:
            out["time.startup_s"] = max(self.first_epoch_start - self.started_at, named)
        for name in ("first_epoch_at", "train"):
            if name in self.seconds:
                out[f"time.{name}_s"] = self.seconds[name]
        if self.last_epoch_end is not None:
            out["time.finalize_s"] = now - self.last_epoch_end
        out["time.total_s"] = now - self.started_at
        return out


def summary(metrics: dict[str, float]) -> str | None:
    """One line of the stage metrics, for the closing table."""
    if "time.total_s" not in metrics:
        return None
    parts = {
        "Ray": metrics.get("time.ray_start_s"),
        "data": metrics.get("time.data_s"),
        "workers": metrics.get("time.workers_start_s"),
    }
    inside = ", ".join(f"{k} {_secs(v)}" for k, v in parts.items() if v is not None)
    # (seconds said once, tenths below 100: the line stays within 80 columns)
    line = f"time (s): start-up {_secs(metrics['time.startup_s'])} ({inside})"
    if "time.train_s" in metrics:
        line += f", epochs {_secs(metrics['time.train_s'])}"
    if "time.finalize_s" in metrics:
        line += f", end {_secs(metrics['time.finalize_s'])}"
    return line


def _secs(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"
