"""`deeprig submit`: a job spec checked against a cluster's resources on the client, its
working directory uploaded, then `deeprig run JOB` run there through the Ray Jobs API.
Parsing and printing only; the work is in deeprig.cluster.jobs."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from deeprig.cli.common import SET_HELP, bad_spec, console, load_spec_or_exit
from deeprig.cli.ray_jobs import ADDRESS_HELP, dashboard_url, follow_to_end, jobs_api
from deeprig.spec import SpecError


def _job_destinations(dashboard: str, tracking_uri: str | None, storage: str | None):
    """Where the submitted job records runs and keeps checkpoints: the options, else what
    the local cluster provides when it is the target, else a server URI / shared storage
    the environment names."""
    from deeprig.cluster.local import find_cluster
    from deeprig.tracking.store import STORAGE_ENV, is_node_local_uri

    cluster = find_cluster()
    if cluster and cluster.dashboard.rstrip("/") == dashboard.rstrip("/"):
        tracking_uri = tracking_uri or cluster.tracking_uri
        storage = storage or cluster.storage
    env_uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri and env_uri and not is_node_local_uri(env_uri):
        tracking_uri = env_uri
    return tracking_uri, storage or os.environ.get(STORAGE_ENV) or None


def submit(
    job: Path = typer.Argument(..., help="Job spec (YAML) inside the working directory."),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    address: str = typer.Option(None, help=ADDRESS_HELP),
    working_dir: Path = typer.Option(
        Path("."), help="Folder uploaded with the job (Ray honours .gitignore and .rayignore)."
    ),
    exclude: list[str] = typer.Option([], help="Also leave out paths matching this pattern."),
    tracking_uri: str = typer.Option(
        None, help="MLflow tracking server the job records to (default: the cluster's)."
    ),
    storage: str = typer.Option(
        None, help="Checkpoint storage every node sees: s3://..., or a shared path."
    ),
    no_wait: bool = typer.Option(False, "--no-wait", help="Print the id and return."),
) -> None:
    """Submit a job to a Ray cluster through the Ray Jobs API and follow its logs.

    The spec is validated and checked against the cluster's resources first,
    and the working directory's size is checked before anything is uploaded
    (exit 2 when either would fail). Then `deeprig run JOB` runs on the cluster.
    Exit codes follow the job: 0 SUCCEEDED, 1 FAILED, 3 STOPPED (with
    --no-wait: 0 once submitted).

    Example: deeprig submit jobs/digits_cnn.yaml --address http://127.0.0.1:8265
    """
    from deeprig.cluster import jobs
    from deeprig.runners import RUNNERS
    from deeprig.runners.contract import check_on_cluster

    spec = load_spec_or_exit(job, overrides)
    dashboard = dashboard_url(address)
    job_tracking, job_storage = _job_destinations(dashboard, tracking_uri, storage)
    try:
        upload = jobs.measure_working_dir(working_dir, exclude)
        jobs.check_upload_size(upload)
        client = jobs_api(dashboard)
        resources = jobs.dashboard_resources(dashboard)
        check = RUNNERS[spec.kind].check
        summary = check_on_cluster(spec, resources, job_tracking, job_storage, check).summary
        env = {}
        if job_tracking:
            env[jobs.TRACKING_ENV] = job_tracking
        if job_storage:
            env[jobs.STORAGE_ENV] = job_storage
        submission = jobs.build_submission(spec, job, overrides, upload, env)
    except SpecError as exc:
        bad_spec(exc, job)
    console.print(
        f"{spec.kind} job [bold]{spec.name}[/] - {summary}\n"
        f"uploading {upload.root} ({upload.num_files} files, {upload.num_bytes / 2**20:.1f} MiB) "
        f"to {dashboard} ({resources.nodes} nodes, {resources.cpus:g} CPUs)"
    )
    submission_id = jobs.submit(client, submission)
    console.print(f"submitted [bold]{submission_id}[/]")
    if no_wait:
        console.print(
            f"  follow it: deeprig logs {submission_id} -f   status: deeprig status {submission_id}"
        )
        return
    raise typer.Exit(follow_to_end(client, submission_id))
