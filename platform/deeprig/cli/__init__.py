"""The `deeprig` command: parses arguments, loads the spec, dispatches to a runner or to
deeprig.cluster. No domain logic.

One module per group of verbs, each importing only `cli.common` (consoles, exit codes,
load-or-exit); this module builds the app from them, so `deeprig --help` lists them all.
Exit codes: cli.common.ExitCode.
"""

from __future__ import annotations

import typer

from deeprig.cli import cluster, jobs, remote, tracking

app = typer.Typer(
    help=(
        "deeprig: one YAML job spec for deep-learning training on Ray, every run in MLflow.\n\n"
        "Example: deeprig run jobs/quickstart.yaml"
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)

app.command()(jobs.validate)
app.command()(jobs.run)
app.command(name="eval")(jobs.evaluate)
app.command()(tracking.runs)
app.command()(tracking.ui)
app.command()(remote.submit)
app.command()(remote.status)
app.command()(remote.logs)
app.command()(remote.stop)
app.command(name="list")(remote.list_jobs)
app.add_typer(cluster.cluster_app, name="cluster")

__all__ = ["app"]
