"""The verbs on a cluster's jobs once submitted, through the Ray Jobs API: status, logs,
stop, list; `logs` and `list` with --history read the job history MLflow keeps instead.
Parsing and printing only; the work is in deeprig.cluster.jobs."""

from __future__ import annotations

from datetime import datetime
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
from deeprig.cli.ray_jobs import (
    ADDRESS_HELP,
    dashboard_url,
    exit_code,
    follow_to_end,
    jobs_api,
    record_end,
)
from deeprig.cluster.jobs import JobMetadata


def status(
    submission_id: str = typer.Argument(..., help="Submission id (from submit or list)."),
    address: str = typer.Option(None, help=ADDRESS_HELP),
    output: str = typer.Option("table", "--output", "-o", help=OUTPUT_HELP),
) -> None:
    """Show a submitted job's status. Exit 0 SUCCEEDED, 1 FAILED, 3 STOPPED, 4 not ended.

    Example: deeprig status deeprig-digits-cnn-1a2b3c4d   (or -o json for scripts)
    """
    client = jobs_api(address)
    info = client.get_job_info(submission_id)
    job_status = str(info.status.value)
    record = {
        "submission_id": submission_id,
        "status": job_status,
        "message": info.message or "",
        "entrypoint": info.entrypoint,
        "started": _when(info.start_time),
        "ended": _when(info.end_time),
        **(info.metadata or {}),
    }
    print_records([record], tuple(record), output, _status_table)
    if output == "table":
        record_end(client, submission_id)
    raise typer.Exit(exit_code(job_status))


def _status_table(records: list[dict[str, Any]]) -> Table:
    (record,) = records
    table = Table(show_header=False, title=record["submission_id"], box=box.SIMPLE)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in record.items():
        if key != "submission_id":
            table.add_row(key, str(value))
    return table


def logs(
    submission_id: str = typer.Argument(..., help="Submission id."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Stream until the job ends."),
    address: str = typer.Option(None, help=ADDRESS_HELP),
    history: bool = typer.Option(
        False, "--history", help="The log recorded in MLflow when the job ended (no cluster)."
    ),
    tracking_uri: str = typer.Option(None, help="MLflow store of --history."),
) -> None:
    """Print a submitted job's logs; with -f, follow them and exit with the job's status.

    Example: deeprig logs deeprig-digits-cnn-1a2b3c4d -f   (or --history)
    """
    if history:
        from deeprig.tracking.job_history import recorded_log

        target, artifacts = _history_store(tracking_uri)
        try:
            print(recorded_log(target, submission_id, artifacts), end="")
        except (LookupError, OSError) as exc:
            errors.print(str(exc))
            raise typer.Exit(ExitCode.BAD_INPUT) from None
        return
    client = jobs_api(address)
    if follow:
        raise typer.Exit(follow_to_end(client, submission_id))
    print(client.get_job_logs(submission_id), end="")


def stop(
    submission_id: str = typer.Argument(..., help="Submission id."),
    address: str = typer.Option(None, help=ADDRESS_HELP),
) -> None:
    """Stop a submitted job; its MLflow run ends KILLED. Waits until the job has stopped.

    Example: deeprig stop deeprig-digits-cnn-1a2b3c4d
    """
    from deeprig.cluster.jobs import wait_for_end

    client = jobs_api(address)
    client.stop_job(submission_id)
    final = wait_for_end(client, submission_id, timeout_s=60.0)
    console.print(f"job {submission_id}: {final}")
    record_end(client, submission_id)
    if final not in ("STOPPED", "SUCCEEDED", "FAILED"):
        raise typer.Exit(ExitCode.FAILED)


JOB_COLUMNS = ("submission_id", "job", "kind", "status", "started", "duration_s")


HISTORY_HELP = (
    "Read the jobs' history from MLflow instead (works after the cluster is gone): each "
    "ended job's status, message and run; `deeprig logs ID --history` prints its log."
)


def _history_store(tracking_uri: str | None):
    """Where the job history is: the store every verb reads (`resolve_tracking`), except
    that the cluster `deeprig cluster up` made here is read from its database on disk,
    running or not (its server may be down, and submitted jobs recorded there)."""
    from deeprig.cluster.local import find_cluster
    from deeprig.cluster.tracking_server import tracking_store
    from deeprig.cluster.tracking_target import resolve_tracking
    from deeprig.tracking.store import EMBEDDED, TrackingTarget

    target = resolve_tracking(tracking_uri, given_by="--tracking-uri")
    local = tracking_store()
    cluster = find_cluster()
    default = target.chosen_by == EMBEDDED or (cluster and target.uri == cluster.tracking_uri)
    if not default or not local.database.exists():
        return target, None
    where = "the database of the cluster `deeprig cluster up` made here"
    return TrackingTarget(local.uri, None, where), local.artifacts


def _print_history(tracking_uri: str | None, limit: int, output: str) -> None:
    from deeprig.runners import key_metrics_by_kind
    from deeprig.tracking.job_history import HISTORY_COLUMNS, job_history

    target, _ = _history_store(tracking_uri)
    history = job_history(target, limit, key_metrics_by_kind())
    records = [r | {"store": target.uri} for r in history]
    print_records(
        records,
        (*HISTORY_COLUMNS, "store"),
        output,
        _history_table,
        empty="no job history yet",
        header=f"job history in {target.described}",
    )


def _history_table(records: list[dict[str, Any]]) -> Table:
    from deeprig.tracking.key_metric import label

    # The ids are what a user copies next (`logs ID --history`, `ui --run`): always whole.
    # The key metric and when the job ended only where they fit.
    ids: Columns = [
        ("submission id", [r["submission_id"] for r in records], None),
        ("status", [r["status"] for r in records], None),
    ]
    run_ids: Columns = [("run id", [r["run_id"] for r in records], None)]
    key: Columns = [
        ("key metric", [label(r["metric"]) if r["metric"] else "" for r in records], 12),
        ("value", [f"{r['value']:.4g}" if r["metric"] else "" for r in records], None),
    ]
    ended: Columns = [("ended", [r["ended"] for r in records], None)]
    for columns in (ids + ended + run_ids + key, ids + run_ids + key, ids + run_ids):
        widths = fit_columns(columns)
        if widths is not None:
            break
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
    widths = widths or [len(header) for header, _, _ in columns]
    for (header, _, _), width in zip(columns, widths, strict=True):
        table.add_column(
            header,
            width=width,
            no_wrap=header != "key metric",
            overflow="ellipsis",
            justify="right" if header == "value" else "left",
        )
    for i in range(len(records)):
        table.add_row(*(cells[i] for _, cells, _ in columns))
    return table


def list_jobs(
    address: str = typer.Option(None, help=ADDRESS_HELP),
    limit: int = typer.Option(20, help="Most recent N jobs."),
    output: str = typer.Option("table", "--output", "-o", help=OUTPUT_HELP),
    history: bool = typer.Option(False, "--history", help=HISTORY_HELP),
    tracking_uri: str = typer.Option(None, help="MLflow store of --history."),
) -> None:
    """List the cluster's jobs, newest first (--history: from MLflow, cluster or not).

    Example: deeprig list --address http://127.0.0.1:8265   (or --history)
    """
    if history:
        _print_history(tracking_uri, limit, output)
        return
    dashboard = dashboard_url(address)
    jobs = sorted(jobs_api(dashboard).list_jobs(), key=lambda j: j.start_time or 0, reverse=True)
    records = []
    for info in jobs[:limit]:
        metadata = info.metadata or {}
        end = info.end_time or (datetime.now().timestamp() * 1000)
        records.append(
            {
                "submission_id": info.submission_id or info.job_id or "",
                "job": metadata.get(JobMetadata.JOB, info.entrypoint[:40]),
                "kind": metadata.get(JobMetadata.KIND, ""),
                "status": str(info.status.value),
                "started": _when(info.start_time),
                "duration_s": round((end - info.start_time) / 1000) if info.start_time else None,
            }
        )
    print_records(
        records,
        JOB_COLUMNS,
        output,
        _jobs_table,
        empty="no jobs on this cluster yet",
        header=f"jobs on {dashboard}",
    )


def _jobs_table(records: list[dict[str, Any]]) -> Table:
    wide = console.width >= 100
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    # The submission id is what `status`, `logs` and `stop` take: always whole.
    table.add_column("submission id", no_wrap=True)
    table.add_column("status", no_wrap=True)
    if wide:
        table.add_column("kind")
    table.add_column("started", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    for r in records:
        duration = f"{r['duration_s']} s" if r["duration_s"] is not None else ""
        cells = [r["submission_id"], r["status"]]
        cells += [r["kind"]] if wide else []
        cells += [r["started"], duration]
        table.add_row(*cells)
    return table


def _when(millis: int | None) -> str:
    return datetime.fromtimestamp(millis / 1000).strftime("%Y-%m-%d %H:%M:%S") if millis else ""
