"""The progress bar of a predict job: rows done against the total its reader counted
before Ray started, rows/s and the time left."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

_BAR = 24  # characters of the bar


class Progress:
    """One line kept current on a terminal, a plain line every 10 s off one."""

    def __init__(self, console: Console, total: int):
        self.console, self.total = console, total
        self.rows, self.skipped, self.started, self.shown = 0, 0, time.time(), 0.0

    def advance(self, rows: int, skipped: int = 0) -> None:
        self.rows += rows
        self.skipped += skipped
        now = time.time()
        every = 0.5 if self.console.is_terminal else 10.0
        if now - self.shown >= every:
            self.shown = now
            self.console.print(
                self.line(now), end="\r" if self.console.is_terminal else "\n", highlight=False
            )

    def close(self) -> None:
        self.console.print(self.line(time.time()), highlight=False)

    def line(self, now: float) -> str:
        done = self.rows + self.skipped
        rate = done / max(now - self.started, 1e-9)
        left = (self.total - done) / rate if rate > 0 else float("nan")
        filled = round(_BAR * done / max(self.total, 1))
        skipped = f", {self.skipped:,} skipped" if self.skipped else ""
        return (
            f"predict [{'#' * filled}{'.' * (_BAR - filled)}] {done:,}/{self.total:,} rows"
            f"{skipped}, {rate:,.0f} rows/s, {max(left, 0):.0f} s left"
        )
