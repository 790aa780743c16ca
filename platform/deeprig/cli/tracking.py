"""The verbs that read what was recorded: runs (a table) and ui (MLflow's UI)."""

from __future__ import annotations

import os
import sys

import typer
from rich.table import Table

from deeprig.cli.common import console


def runs(
    experiment: str = typer.Option(None, "--experiment", "-e", help="Only this experiment."),
    limit: int = typer.Option(20, help="Most recent N runs."),
    tracking_uri: str = typer.Option(None, help="MLflow store (default: as for `run`)."),
) -> None:
    """List recorded runs as a table: job, kind, status, key metric, duration.

    Example: deeprig runs --experiment digits --limit 5
    """
    from deeprig.tracking.listing import list_runs
    from deeprig.tracking.store import resolve_tracking

    target = resolve_tracking(tracking_uri)
    rows = list_runs(target, experiment, limit)
    table = Table(title=f"runs in {target.uri}")
    for column in (
        "run id",
        "experiment",
        "job",
        "kind",
        "status",
        "metric",
        "value",
        "duration",
        "started",
    ):
        table.add_column(column, justify="right" if column in ("value", "duration") else "left")
    for row in rows:
        table.add_row(*row)
    console.print(table if rows else f"no runs yet in {target.uri}")


def ui(
    port: int = typer.Option(5000, help="Port to serve on."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (127.0.0.1: this machine only)."),
    tracking_uri: str = typer.Option(None, help="MLflow store (default: as for `run`)."),
) -> None:
    """Open the MLflow UI (the experiment tracking UI) over the configured store.

    Example: deeprig ui --port 5000, then browse http://127.0.0.1:5000
    """
    from deeprig.tracking.store import resolve_tracking

    target = resolve_tracking(tracking_uri)
    if target.uri.startswith("http"):
        console.print(f"runs live on a tracking server: open {target.uri}")
        return
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        target.uri,
        "--host",
        host,
        "--port",
        str(port),
    ]
    if target.artifact_root:
        command += ["--default-artifact-root", target.artifact_root]
    console.print(f"MLflow UI over {target.uri} at [bold]http://{host}:{port}[/] (Ctrl-C stops)")
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    # Become the MLflow server rather than wait on it: Ctrl-C and a service manager's
    # SIGTERM then reach it directly, and no orphan is left behind.
    os.execve(sys.executable, command, env)
