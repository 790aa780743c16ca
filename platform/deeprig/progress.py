"""Live terminal progress for a running job, fed by polling its MLflow run.

A train job's epochs reach MLflow from the Ray Train controller (tracking/report_logger.py);
the driver polls the run and redraws, so the same progress works for a local job and for
one on a cluster. A search's progress is fed by Tune's callbacks (tracking/trials.py).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Column

EpochRows = Callable[[], list[dict[str, float]]]


class EpochProgress:
    """A bar of epochs with the latest metrics, redrawn from `poll()` every `interval` s.

    At any width the epoch counter and the time left come first; metrics follow as far as
    they fit. Not on a terminal (CI, a submitted job's log), one plain line per epoch:
    every epoch once, from `history()` (each epoch's metrics so far) when epochs end
    faster than the poll."""

    def __init__(
        self,
        console: Console,
        total_epochs: int | None,
        poll: Callable[[], dict[str, float]],
        shown: tuple[str, ...],
        interval: float = 1.0,
        waiting_for: str = "the first epoch",
        history: EpochRows | None = None,
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
        self._history = history
        self._first_seen: tuple[int, float] | None = None  # (epoch, when first polled)
        self._live = console.is_terminal
        self._progress = Progress(
            TextColumn("[bold]epoch"),
            MofNCompleteColumn(),
            BarColumn(bar_width=12),
            TextColumn("{task.fields[left]} left"),
            TextColumn("{task.fields[metrics]}", table_column=Column(no_wrap=True)),
            console=console,
            transient=False,
        )
        # Until the first epoch ends, say what it waits for, not just "starting".
        self._task = self._progress.add_task(
            "train",
            total=total_epochs,
            metrics=f"waiting for {waiting_for}...",
            left=_clock(None),
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

    def seconds_left(self, epoch: int, metrics: dict[str, float], now: float) -> float | None:
        """The epochs still to run at the rate seen so far (`now`: time.monotonic()):
        between the first two epochs polled, else the epoch's own `epoch_time_s`; None
        while neither is known."""
        if self._total is None or epoch <= 0:
            return None
        if self._first_seen is None:
            self._first_seen = (epoch, now)
        first_epoch, first_at = self._first_seen
        if epoch > first_epoch:
            per_epoch: float | None = (now - first_at) / (epoch - first_epoch)
        else:
            per_epoch = metrics.get("epoch_time_s")
        return None if per_epoch is None else max(self._total - epoch, 0) * per_epoch

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
            left = _clock(self.seconds_left(epoch, metrics, time.monotonic()))
            self._progress.update(self._task, completed=epoch, metrics=text, left=left)
        elif epoch > self._last_epoch:  # (a plain line an epoch, not a step)
            self._print_epochs(epoch, metrics)
        self._last_epoch = max(self._last_epoch, epoch)

    def _print_epochs(self, epoch: int, latest: dict[str, float]) -> None:
        """One plain line for each epoch ended since the last one printed."""
        rows = [latest]
        if self._history is not None and epoch > self._last_epoch + 1:
            with contextlib.suppress(Exception):  # (a busy store: the latest epoch alone)
                rows = self._history() or rows
        total = f"/{self._total}" if self._total else ""
        elapsed = time.monotonic() - self._started
        for row in rows:
            at = int(row.get("epoch", 0))
            if self._last_epoch < at <= epoch:
                text = self._metrics_text(row, 200)
                self._console.print(
                    f"epoch {at}{total}  {text}  ({elapsed:.0f} s)",
                    highlight=False,
                    soft_wrap=True,
                )


def epoch_rows(
    metric_history: Callable[[str], list[tuple[int, float]]], keys: Iterable[str]
) -> list[dict[str, float]]:
    """Each epoch's metrics, oldest first, from a run's (step, value) histories of `keys`
    and of `epoch`: what a plain progress line of a past epoch shows."""
    rows: dict[int, dict[str, float]] = {}
    for key in ("epoch", *keys):
        for step, value in metric_history(key):
            rows.setdefault(step, {})[key] = value
    return [rows[step] for step in sorted(rows) if "epoch" in rows[step]]


def _clock(seconds: float | None) -> str:
    """h:mm:ss, as rich writes a time left; -:--:-- while unknown."""
    if seconds is None:
        return "-:--:--"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


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
            f"best {self._metric} (run)",
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
