"""What the verbs on a cluster's jobs share (submit, status, logs, stop, list): the Ray Jobs
API client of the cluster named, following a job to its end, recording an ended job's
history in MLflow, and a job's status as the exit code."""

from __future__ import annotations

import os

import typer

from deeprig.cli.common import ExitCode, console, errors

ADDRESS_HELP = (
    "Ray dashboard of the cluster (http://HEAD:8265). Omitted: $RAY_API_SERVER_ADDRESS, "
    "else the cluster `deeprig cluster up` started."
)


def dashboard_url(address: str | None) -> str:
    """The cluster's dashboard: `--address`, else $RAY_API_SERVER_ADDRESS, else the local
    cluster's (exit 2 when there is none)."""
    from deeprig.cluster.local import find_cluster

    address = address or os.environ.get("RAY_API_SERVER_ADDRESS")
    if address:
        return address if "://" in address else f"http://{address}"
    cluster = find_cluster()
    if cluster is None:
        errors.print("no cluster given: pass --address http://HEAD:8265, or `deeprig cluster up`")
        raise typer.Exit(ExitCode.BAD_INPUT)
    return cluster.dashboard


def jobs_api(address: str | None):
    """The Ray Jobs API client of the cluster at `address` (exit 1 when it is unreachable)."""
    from deeprig.cluster.jobs import jobs_client

    dashboard = dashboard_url(address)
    try:
        return jobs_client(dashboard)
    except Exception as exc:
        errors.print(f"[bold red]cannot reach the Ray Jobs API at {dashboard}:[/] {exc}")
        raise typer.Exit(ExitCode.FAILED) from None


def follow_to_end(client, submission_id: str) -> int:
    """Print a job's log until the job ends, record its end; its exit code (130 when Ctrl-C
    stops the following: the job goes on)."""
    from deeprig.cluster import jobs

    try:
        status = jobs.follow_logs(client, submission_id, lambda text: print(text, end=""))
    except KeyboardInterrupt:
        errors.print(
            f"\nstopped following; the job goes on. Stop it with: deeprig stop {submission_id}"
        )
        return 130
    colour = {"SUCCEEDED": "green", "FAILED": "red"}.get(status, "yellow")
    console.print(f"job {submission_id}: [{colour}]{status}[/]")
    record_end(client, submission_id)
    return exit_code(status)


def record_end(client, submission_id: str) -> None:
    """Keep an ended job's history in MLflow (its run, status, message and driver log):
    the cluster's job table is gone with the cluster."""
    from deeprig.cluster.jobs import JobMetadata
    from deeprig.cluster.local import find_cluster

    info = client.get_job_info(submission_id)
    metadata = info.metadata or {}
    uri = metadata.get(JobMetadata.TRACKING)
    cluster = find_cluster()
    if uri is None and cluster and cluster.dashboard.rstrip("/") == client.get_address():
        uri = cluster.tracking_uri  # (a job Ray's own CLI sent to the local cluster)
    if str(info.status.value) not in ("SUCCEEDED", "FAILED", "STOPPED") or not uri:
        return
    from deeprig.cluster.tracking_target import resolve_tracking
    from deeprig.tracking.job_history import JobEnd, record_job_end

    end = JobEnd(
        submission_id=submission_id,
        job=metadata.get(JobMetadata.JOB, ""),
        kind=metadata.get(JobMetadata.KIND, ""),
        experiment=metadata.get(JobMetadata.EXPERIMENT) or metadata.get(JobMetadata.JOB, ""),
        entrypoint=info.entrypoint,
        address=client.get_address(),
        status=str(info.status.value),
        message=info.message or "",
        log=client.get_job_logs(submission_id),
    )
    try:
        run_id = record_job_end(resolve_tracking(uri, given_by="the job's metadata"), end)
    except Exception as exc:  # the job ran; only its record is missing: say so, go on
        errors.print(f"[yellow]could not record the job's history in {uri}:[/] {exc}")
        return
    console.print(f"  recorded in MLflow: run {run_id} (its driver log: logs/driver.log)")


def exit_code(status: str) -> int:
    """A cluster job's final status as deeprig's exit code."""
    by_status = {
        "SUCCEEDED": ExitCode.OK,
        "FAILED": ExitCode.FAILED,
        "STOPPED": ExitCode.STOPPED,
        "PENDING": ExitCode.NOT_ENDED,
        "RUNNING": ExitCode.NOT_ENDED,
    }
    return by_status.get(status, ExitCode.FAILED)
