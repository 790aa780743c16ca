"""The `deeprig` command: parses arguments, loads the spec, dispatches to a runner or to
deeprig.cluster. No domain logic.

One module per group of verbs, each importing only `cli.common` (consoles, exit codes,
load-or-exit) and, for the verbs on a cluster's jobs, `cli.ray_jobs`; this module builds
the app from them, so `deeprig --help` lists them all.
Exit codes: cli.common.ExitCode.
"""

from __future__ import annotations

import os
import sys

import typer

# Before anything imports MLflow: its INFO lines (database migrations) and "View run"
# links are not deeprig's output (deeprig prints the run and where to see it).
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

from deeprig.cli import cluster, jobs, predict, remote, submit, tracking, users  # noqa: E402


def _plain_value_names() -> None:
    """typer 0.29 shows Python types in help (`<bool>`, `<list[str]>`); a CLI's help shows
    nothing for a flag and the kind of value in capitals (TEXT, INTEGER, PATH)."""
    from typer.core import TyperArgument, TyperOption

    def shown(original):
        def display(self, ctx):
            if getattr(self, "is_flag", False):
                return None
            text = original(self, ctx)
            if not text or self.metavar is not None:
                return text
            bare = text.strip("<>").removeprefix("list[").rstrip("]")
            names = {"str": "TEXT", "int": "INTEGER", "float": "NUMBER", "path": "PATH"}
            return names.get(bare.split("...")[0], bare.upper()) + ("..." if "..." in text else "")

        return display

    for cls in (TyperOption, TyperArgument):
        cls.display_type_rich = shown(cls.display_type_rich)  # type: ignore[method-assign]


_plain_value_names()

app = typer.Typer(
    help=(
        "deeprig: one YAML job spec for deep-learning training on Ray, every run in MLflow.\n\n"
        "Example: deeprig run jobs/quickstart.yaml"
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
)

app.command()(jobs.validate)
app.command()(jobs.run)
app.command(name="eval")(jobs.evaluate)
app.command()(predict.predict)
app.command()(tracking.runs)
app.command()(tracking.ui)
app.command()(submit.submit)
app.command()(remote.status)
app.command()(remote.logs)
app.command()(remote.stop)
app.command(name="list")(remote.list_jobs)
app.add_typer(cluster.cluster_app, name="cluster")
app.add_typer(users.users_app, name="users")


def main() -> None:
    """The `deeprig` command: the app, then the process ends without Python's teardown.

    After a job the interpreter's own teardown (freeing what torch, torch.export's tracer,
    Ray and MLflow built: no Python frame runs) took 2.1-2.2 s of the quickstart's ~25 s
    on 2 CPUs, against 0.03 s without it (benchmarks/RESULTS.md, figure 11). Nothing is
    left to do by then: every command closes its runs, flushes its metrics and shuts
    Ray down itself, and deeprig registers no atexit work. In-process callers
    (`app` under typer's CliRunner, the tests) keep the ordinary exit."""
    import logging

    try:
        app()
        code: object = 0
    except SystemExit as exited:
        code = exited.code
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)  # (SystemExit("message") prints it and exits 1)
        code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


__all__ = ["app", "main"]
