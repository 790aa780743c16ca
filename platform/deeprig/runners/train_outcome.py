"""What a finished train job hands back to the CLI (`TrainOutcome`), and how it is shown: the
closing table of the best checkpoint's metrics, the stage timings, where the MLflow run is."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console

from deeprig.runners.closing import print_metrics_table
from deeprig.runners.stages import summary as stage_summary
from deeprig.runners.train_metrics import CLOSING_METRICS


@dataclass(frozen=True)
class TrainOutcome:
    job_name: str
    experiment: str
    run_id: str | None
    metrics: dict[str, float]
    checkpoint_path: str | None
    tracking_uri: str | None
    seconds: float
    run_url: str | None = None  # its page in MLflow's UI, where a server is known
    shown: tuple[str, ...] = CLOSING_METRICS  # what the closing table shows, in order

    def render(self, console: Console) -> None:
        print_metrics_table(
            console,
            f"{self.job_name}: best checkpoint",
            self.metrics,
            self.shown,
            self.seconds,
            self.checkpoint_path,
        )
        if timing := stage_summary(self.metrics):
            console.print(f"[dim]{timing}[/]")
        if self.run_url:
            console.print(f"MLflow run [bold]{self.run_id}[/]: {self.run_url}", soft_wrap=True)
        elif self.run_id:
            console.print(
                f"MLflow run [bold]{self.run_id}[/] ({self.tracking_uri})\n"
                f"  see it: [bold]deeprig ui --run {self.run_id}[/], or [bold]deeprig runs[/]",
                soft_wrap=True,
            )
