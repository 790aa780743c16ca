"""The verbs that read what was recorded: runs (a table; --sync uploads what a job kept
locally while its tracking server was away) and ui (MLflow's UI)."""

from __future__ import annotations

import os
import sys
from typing import Any

import typer
from rich import box
from rich.table import Table

from deeprig.cli.common import (
    OUTPUT_HELP,
    Columns,
    ExitCode,
    console,
    errors,
    fit_columns,
    print_records,
)


def runs(
    experiment: str = typer.Option(None, "--experiment", "-e", help="Only this experiment."),
    limit: int = typer.Option(20, help="Most recent N runs (a search counts once)."),
    trials: bool = typer.Option(
        False, "--trials", help="Also each search's trial runs, indented under it."
    ),
    tracking_uri: str = typer.Option(None, help="MLflow store (default: as for `run`)."),
    output: str = typer.Option("table", "--output", "-o", help=OUTPUT_HELP),
    close_stale: bool = typer.Option(
        False,
        "--close-stale",
        help="Mark FAILED each RUNNING run whose driver on this host is gone (SIGKILL, "
        "a closed laptop); --resume can still continue it.",
    ),
    sync: bool = typer.Option(
        False,
        "--sync",
        help="Upload the records jobs kept locally while the tracking server was away "
        "(every run's, or RUN's), in order, each point once.",
    ),
    run: str = typer.Argument(None, help="With --sync: only this run's records."),
) -> None:
    """List recorded runs: run id, job, status, key metric (and more when the terminal is wide).

    The key metric is the value at the checkpoint the run kept (best
    val_accuracy), not the last epoch's. A search's trials are counted on its
    line (--trials lists them under it). The first line names the store read.

    --sync uploads what jobs kept locally while their tracking server was away.

    Example: deeprig runs --experiment digits --limit 5   (or -o json for scripts)
    """
    from deeprig.cluster.tracking_target import resolve_tracking
    from deeprig.runners import key_metrics_by_kind
    from deeprig.tracking.listing import COLUMNS, NoSuchExperiment, list_runs

    target = resolve_tracking(tracking_uri, given_by="--tracking-uri")
    if close_stale:
        _close_stale(target)
        return
    if sync or run:
        _sync(target, run)
        return
    try:
        records = list_runs(target, experiment, limit, key_metrics_by_kind(), trials)
    except NoSuchExperiment as exc:
        known = ", ".join(exc.known) or "none yet"
        errors.print(f"no experiment {exc.name!r} in {target.described} (experiments: {known})")
        raise typer.Exit(ExitCode.BAD_INPUT) from None
    print_records(
        records,
        COLUMNS,
        output,
        _runs_table,
        empty="no runs yet",
        header=f"runs in {target.described}",
    )


def _runs_table(records: list[dict[str, Any]]) -> Table:
    # Experiment, kind, duration and start too where they fit; else the five that matter.
    columns = _runs_columns(records, wide=True)
    widths = fit_columns(columns)
    if widths is None:
        columns = _runs_columns(records, wide=False)
        widths = fit_columns(columns) or [len(header) for header, _, _ in columns]
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
    for (header, _, _), width in zip(columns, widths, strict=True):
        table.add_column(
            header,
            width=width,
            no_wrap=header != "key metric",
            overflow="ellipsis",
            justify="right" if header in ("value", "duration") else "left",
        )
    for i, r in enumerate(records):
        cells = [column_cells[i] for _, column_cells, _ in columns]
        table.add_row(*cells, style="dim" if r["parent_run_id"] else None)
    return table


def _runs_columns(records: list[dict[str, Any]], wide: bool) -> Columns:
    """(header, cells, narrowest it may get) of `deeprig runs`' columns. The run id is what
    a user copies next: always whole. A name that does not fit ends in "…", never broken
    over two lines; a key metric's label may take two, broken between its words."""
    from deeprig.tracking.key_metric import label

    def column(header: str, key: str, narrowest: int | None = None):
        return (header, [str(r[key]) for r in records], narrowest)

    jobs = [
        ("  " if r["parent_run_id"] else "")
        + r["job"]
        + (f" ({r['trials']} trials)" if r["trials"] else "")
        for r in records
    ]
    labels = [label(r["metric"]) if r["metric"] else "" for r in records]
    values = [f"{r['value']:.4g}" if r["metric"] else "" for r in records]
    if not wide:
        return [
            column("run id", "run_id"),
            ("job", jobs, 8),
            column("status", "status"),
            ("key metric", labels, 12),
            ("value", values, None),
        ]
    return [
        column("run id", "run_id"),
        column("experiment", "experiment", 10),
        ("job", jobs, 12),
        column("kind", "kind"),
        column("status", "status"),
        ("key metric", labels, 17),
        ("value", values, None),
        ("duration", [f"{r['duration_s']:.1f} s" for r in records], None),
        column("started", "started"),
    ]


def _sync(target, run: str | None) -> None:
    """Exit 1 when something is left in the spool (the server away, a run it lacks)."""
    from deeprig.tracking.spool import spooled_runs, upload_spooled

    if run is None and not spooled_runs():
        console.print("no records kept locally: every run is complete in its store")
        return
    left = False
    for result in upload_spooled(target.uri, [run] if run else None):
        if isinstance(result, str):
            errors.print(f"[yellow]{result}[/]", soft_wrap=True)
            left = True
        else:
            skipped = result.skipped_files
            note = f" ({skipped} file(s) of a job still running left to it)" if skipped else ""
            console.print(
                f"run {result.run_id}: {result.records} record(s) uploaded to "
                f"{target.described}{note}",
                soft_wrap=True,
            )
    if left:
        raise typer.Exit(ExitCode.FAILED)


def _close_stale(target) -> None:
    from deeprig.tracking.drivers import close_stale_runs

    checks = close_stale_runs(target)
    if not checks:
        console.print(f"no RUNNING runs in {target.described}")
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
    from deeprig.cluster.ray_nodes import is_loopback
    from deeprig.cluster.tracking_target import resolve_tracking
    from deeprig.tracking.runs import find_run

    if not is_loopback(host):
        errors.print(
            f"--host {host}: `deeprig ui` serves the store without authentication, so only "
            "to this machine (127.0.0.1). For a team: `deeprig cluster up`, whose tracking "
            "server asks for MLflow users' passwords."
        )
        raise typer.Exit(ExitCode.BAD_INPUT)
    target = resolve_tracking(tracking_uri, given_by="--tracking-uri")
    base = target.uri if target.uri.startswith("http") else f"http://{host}:{port}"
    page = f"{base}/#/experiments"
    if run:
        recorder = find_run(target, run)
        if recorder is None:
            errors.print(f"no run {run!r} in {target.described}")
            raise typer.Exit(ExitCode.BAD_INPUT)
        page = recorder.page_url(base) or page
    if target.uri.startswith("http"):
        console.print(f"runs live on {target.described}: open {page}", soft_wrap=True)
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
        # One user's UI needs one worker: MLflow's default 4 answer in ~10 s and hold ~3 GiB,
        # one in ~4 s with ~0.5 GiB (measured for the cluster's server, tracking_server.py).
        "--workers",
        "1",
    ]
    if target.artifact_root:
        command += ["--default-artifact-root", target.artifact_root]
    console.print(
        f"MLflow UI over {target.described} (Ctrl-C stops)\n  open [bold]{page}[/]", soft_wrap=True
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
