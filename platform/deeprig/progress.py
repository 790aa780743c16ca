"""Live terminal progress for a running job, fed by polling its MLflow run.

A train job's epochs reach MLflow from the Ray Train controller (tracking/report_logger.py);
the driver polls the run and redraws, so the same progress works for a local job and for
one on a cluster. A search's progress is fed by Tune's callbacks (tracking/trials.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Column


class EpochProgress:
    """A bar of epochs with the latest metrics, redrawn from `poll()` every `interval` s.

    At any width the epoch counter and the time left come first; metrics follow as far as
    they fit. Not on a terminal (CI, a submitted job's log), one plain line per epoch."""

    def __init__(
        self,
        console: Console,
        total_epochs: int | None,
        poll: Callable[[], dict[str, float]],
        shown: tuple[str, ...],
        interval: float = 1.0,
        waiting_for: str = "the first epoch",
    ):
        self._console = console
        self._total = total_epochs
        self._poll = poll
        self._shown = shown
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = time.monotonic()
        self._last_epoch = 0
        self._live = console.is_terminal
        self._progress = Progress(
            TextColumn("[bold]epoch"),
            MofNCompleteColumn(),
            BarColumn(bar_width=12),
            TimeRemainingColumn(),
            TextColumn("left"),
            TextColumn("{task.fields[metrics]}", table_column=Column(no_wrap=True)),
            console=console,
            transient=False,
        )
        # Until the first epoch ends, say what it waits for, not just "starting".
        self._task = self._progress.add_task(
            "train", total=total_epochs, metrics=f"waiting for {waiting_for}..."
        )

    def __enter__(self) -> EpochProgress:
        if self._live:
            self._progress.start()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._refresh()
        if self._live:
            self._progress.stop()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._refresh()

    def _metrics_text(self, metrics: dict[str, float], room: int) -> str:
        parts: list[str] = []
        for key in self._shown:
            if key not in metrics:
                continue
            part = f"{key} {metrics[key]:.4g}"
            if len("  ".join([*parts, part])) > room:
                break
            parts.append(part)
        return "  ".join(parts)

    @staticmethod
    def step_text(metrics: dict[str, float]) -> str:
        """Where the epoch in progress is, from the step-level points
        (tracking.log_every_n_steps): "step 120/400" (or "step 120" while streaming)."""
        at, done = metrics.get("step/epoch"), metrics.get("epoch", 0)
        if at is None or "step/in_epoch" not in metrics or int(at) <= int(done):
            return ""
        of = metrics.get("step/per_epoch")
        return f"step {int(metrics['step/in_epoch'])}" + (f"/{int(of)}" if of else "")

    def _refresh(self) -> None:
        try:
            metrics = self._poll()
        except Exception:  # a busy store is no reason to stop training; try next tick
            return
        step = self.step_text(metrics)
        if "epoch" not in metrics and not step:
            return
        epoch = int(metrics.get("epoch", 0))
        if self._live:
            # "epoch 12/15 ━━━━━━━━━━━━ 0:00:03 left " takes about 40 columns.
            room = max(0, self._console.width - 42 - len(step) - 2)
            text = "  ".join(t for t in (step, self._metrics_text(metrics, room)) if t)
            self._progress.update(self._task, completed=epoch, metrics=text)
        elif epoch > self._last_epoch:  # (a plain line an epoch, not a step)
            total = f"/{self._total}" if self._total else ""
            elapsed = time.monotonic() - self._started
            text = self._metrics_text(metrics, 200)
            self._console.print(
                f"epoch {epoch}{total}  {text}  ({elapsed:.0f} s)", highlight=False, soft_wrap=True
            )
        self._last_epoch = max(self._last_epoch, epoch)


class SearchProgress:
    """Live view of a search: trials running / finished / stopped early / failed, and the
    best value so far, fed by the driver-side Tune callback."""

    def __init__(self, console: Console, num_trials: int, metric: str, mode: str):
        from rich.live import Live

        self._num_trials = num_trials
        self._metric = metric
        self._better = (lambda a, b: a < b) if mode == "min" else (lambda a, b: a > b)
        self._best: tuple[float, str] | None = None
        self._running: set[str] = set()
        self._ended: dict[str, str] = {}
        self._live = Live(self._render(), console=console, refresh_per_second=2)

    def __enter__(self) -> SearchProgress:
        self._live.start()
        return self

    def __exit__(self, *exc) -> None:
        self._live.update(self._render())
        self._live.stop()
        self._live.console.print()  # Live leaves the cursor at the table's end

    def started(self, trial_id: str) -> None:
        self._running.add(trial_id)
        self._live.update(self._render())

    def result(self, trial_id: str, result: dict) -> None:
        if self._metric in result:
            value = float(result[self._metric])
            if self._best is None or self._better(value, self._best[0]):
                self._best = (value, trial_id)
        self._live.update(self._render())

    def ended(self, trial_id: str, how: str) -> None:
        self._running.discard(trial_id)
        self._ended[trial_id] = how
        self._live.update(self._render())

    def _render(self):
        from rich.table import Table

        ended = list(self._ended.values())
        table = Table(title="search")
        for column in (
            "trials done",
            "running",
            "finished",
            "stopped early",
            "failed",
            f"best {self._metric} (trial)",
        ):
            table.add_column(column, justify="right")
        best = f"{self._best[0]:.4g} ({self._best[1]})" if self._best else "-"
        table.add_row(
            f"{len(ended)}/{self._num_trials}",
            str(len(self._running)),
            str(ended.count("finished")),
            str(ended.count("stopped early")),
            str(ended.count("failed")),
            best,
        )
        return table
