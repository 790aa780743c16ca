"""The closing table a train or rl job prints: the metrics it has, its time, its checkpoint."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from rich.console import Console
from rich.table import Table


def print_metrics_table(
    console: Console,
    title: str,
    metrics: Mapping[str, float],
    keys: Iterable[str],
    seconds: float,
    checkpoint_path: str | None,
    first: Iterable[tuple[str, str]] = (),
) -> None:
    table = Table(title=title, show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in first:
        table.add_row(name, value)
    for key in keys:
        if key in metrics:
            table.add_row(key, f"{metrics[key]:.4g}")
    console.print(table)
    console.print(f"finished in {seconds:.1f} s")
    if checkpoint_path:
        # A path is copied, not read: never broken across lines by deeprig.
        console.print(f"checkpoint: {checkpoint_path}", soft_wrap=True, highlight=False)
