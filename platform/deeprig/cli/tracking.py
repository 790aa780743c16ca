"""The verbs that read what was recorded: runs (a table) and ui (MLflow's UI)."""

from __future__ import annotations

import os
import sys

import typer
from rich import box
from rich.table import Table

from deeprig.cli.common import OUTPUT_HELP, ExitCode, console, errors, print_records


def runs(
    experiment: str = typer.Option(None, "--experiment", "-e", help="Only this experiment."),
    limit: int = typer.Option(20, help="Most recent N runs."),
    tracking_uri: str = typer.Option(None, help="MLflow store (default: as for `run`)."),
    output: str = typer.Option("table", "--output", "-o", help=OUTPUT_HELP),
    close_stale: bool = typer.Option(
        False,
        "--close-stale",
        help="Mark FAILED each RUNNING run whose driver on this host is gone (SIGKILL, "
        "a closed laptop); --resume can still continue it.",
    ),
) -> None:
    """List recorded runs: run id, job, status, key metric (and more when the terminal is wide).

    Example: deeprig runs --experiment digits --limit 5   (or -o json for scripts)
    """
    from deeprig.tracking.listing import COLUMNS, NoSuchExperiment, list_runs
    from deeprig.tracking.store import resolve_tracking

    target = resolve_tracking(tracking_uri)
    if close_stale:
        _close_stale(target)
        return
    try:
        records = list_runs(target, experiment, limit)
    except NoSuchExperiment as exc:
        known = ", ".join(exc.known) or "none yet"
        errors.print(f"no experiment {exc.name!r} in {target.uri} (experiments: {known})")
        raise typer.Exit(ExitCode.BAD_INPUT) from None
    if output != "table":
        print_records(records, COLUMNS, output)
        return
    if not records:
        console.print(f"no runs yet in {target.uri}")
        return
    wide = console.width >= 120
    table = Table(title=f"runs in {target.uri}", box=box.SIMPLE_HEAD, pad_edge=False)
    # The run id is what a user copies next: always whole, never folded.
    table.add_column("run id", no_wrap=True, min_width=32)
    if wide:
        table.add_column("experiment", overflow="fold")
    table.add_column("job", overflow="fold", max_width=None if wide else 14)
    if wide:
        table.add_column("kind")
    table.add_column("status", no_wrap=True)
    table.add_column("key metric", overflow="fold", justify="right")
    if wide:
        table.add_column("duration", justify="right", no_wrap=True)
        table.add_column("started", no_wrap=True)
    for r in records:
        metric = f"{r['metric']} {r['value']:.4g}" if r["metric"] else ""
        cells = [r["run_id"]]
        cells += [r["experiment"]] if wide else []
        cells += [r["job"]]
        cells += [r["kind"]] if wide else []
        cells += [r["status"], metric]
        cells += [f"{r['duration_s']:.1f} s", r["started"]] if wide else []
        table.add_row(*cells)
    console.print(table)


def _close_stale(target) -> None:
    from deeprig.tracking.drivers import close_stale_runs

    checks = close_stale_runs(target)
    if not checks:
        console.print(f"no RUNNING runs in {target.uri}")
        return
    table = Table(title="RUNNING runs and their drivers", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("run id", no_wrap=True, min_width=32)
    table.add_column("job", overflow="fold", max_width=14)
    table.add_column("now", no_wrap=True)
    table.add_column("why", overflow="fold")
    for check in checks:
        now = "FAILED" if check.verdict == "closed" else f"RUNNING ({check.verdict})"
        table.add_row(check.run_id, check.job, now, check.detail)
    console.print(table)
    closed = sum(c.verdict == "closed" for c in checks)
    console.print(
        f"{closed} run(s) marked FAILED (deeprig.failure=driver_lost)"
        + ("; `deeprig run JOB.yaml --resume` continues one" if closed else "")
    )


def _where_the_credentials_are(uri: str) -> None:
    """Where to find a login for the local cluster's server: the place, never a password."""
    from deeprig.tracking.auth import local_server
    from deeprig.tracking.store import deeprig_home

    server = local_server(deeprig_home(), uri)
    if server is not None:
        console.print(
            f"  it asks for a user and password: the admin's is in {server.credentials_path} "
            "(mode 0600); add people with `deeprig users add`",
            soft_wrap=True,
        )


def ui(
    port: int = typer.Option(5000, help="Port to serve on."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (127.0.0.1: this machine only)."),
    tracking_uri: str = typer.Option(None, help="MLflow store (default: as for `run`)."),
    run: str = typer.Option(None, "--run", help="Print this run's page (a run id)."),
) -> None:
    """Open the MLflow UI (the experiment tracking UI) over the configured store.

    Example: deeprig ui --run 3f2a...e1, then browse the page it prints
    """
    from deeprig.cluster.local import is_loopback
    from deeprig.tracking.runs import find_run
    from deeprig.tracking.store import resolve_tracking

    if not is_loopback(host):
        errors.print(
            f"--host {host}: `deeprig ui` serves the store without authentication, so only "
            "to this machine (127.0.0.1). For a team: `deeprig cluster up`, whose tracking "
            "server asks for MLflow users' passwords."
        )
        raise typer.Exit(ExitCode.BAD_INPUT)
    target = resolve_tracking(tracking_uri)
    base = target.uri if target.uri.startswith("http") else f"http://{host}:{port}"
    page = f"{base}/#/experiments"
    if run:
        recorder = find_run(target, run)
        if recorder is None:
            errors.print(f"no run {run!r} in {target.uri}")
            raise typer.Exit(ExitCode.BAD_INPUT)
        page = recorder.page_url(base) or page
    if target.uri.startswith("http"):
        console.print(f"runs live on a tracking server: open {page}", soft_wrap=True)
        _where_the_credentials_are(target.uri)
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
    console.print(
        f"MLflow UI over {target.uri} (Ctrl-C stops)\n  open [bold]{page}[/]", soft_wrap=True
    )
    # The UI's own server warns about its dependencies' deprecations on every start.
    env = dict(
        os.environ,
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        PYTHONWARNINGS="ignore::DeprecationWarning,ignore::UserWarning",
    )
    # Become the MLflow server rather than wait on it: Ctrl-C and a service manager's
    # SIGTERM then reach it directly, and no orphan is left behind.
    os.execve(sys.executable, command, env)
