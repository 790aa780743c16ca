"""Live terminal progress for a running job, fed by polling its MLflow run.

Rank 0 logs each epoch's metrics to MLflow; the driver polls the run and redraws, so the
same progress works for a local job and for one on a cluster.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class EpochProgress:
    """A bar of epochs with the latest metrics, redrawn from `poll()` every `interval` s."""

    def __init__(
        self,
        console: Console,
        total_epochs: int,
        poll: Callable[[], dict[str, float]],
        shown: tuple[str, ...],
        interval: float = 1.0,
    ):
        self._poll = poll
        self._shown = shown
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._progress = Progress(
            TextColumn("[bold]epoch"),
            MofNCompleteColumn(),
            BarColumn(),
            TextColumn("{task.fields[metrics]}"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task("train", total=total_epochs, metrics="starting...")

    def __enter__(self) -> EpochProgress:
        self._progress.start()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._refresh()
        self._progress.stop()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._refresh()

    def _refresh(self) -> None:
        try:
            metrics = self._poll()
        except Exception:  # a busy store is no reason to stop training; try next tick
            return
        if "epoch" not in metrics:
            return
        text = "  ".join(f"{k} {metrics[k]:.4g}" for k in self._shown if k in metrics)
        self._progress.update(self._task, completed=int(metrics["epoch"]), metrics=text)
