"""Jobs on a Ray cluster through Ray's Jobs API: submit a deeprig job with its working
directory, follow its logs, ask its status, stop it, list them.

Ray does the work (`JobSubmissionClient`, runtime_env packaging); this module is the policy:
the entrypoint is `deeprig run` on the cluster, the working directory's upload size is
checked with Ray's own ignore rules before anything is sent, and the cluster's token
authentication is used, never switched off.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deeprig.cluster.ray_env import use_token_auth_if_available
from deeprig.cluster.resources import ClusterResources
from deeprig.spec.errors import Problem, SpecError


class JobMetadata:
    """Keys of the metadata deeprig attaches to a submitted Ray job (`deeprig list`)."""

    JOB = "deeprig.job"
    KIND = "deeprig.kind"
    SPEC = "deeprig.spec"
    EXPERIMENT = "deeprig.experiment"
    # Where the job records (never with credentials in it): the job history goes there.
    TRACKING = "deeprig.tracking_uri"


# What a submitted deeprig job's driver needs in its environment; the rest of deeprig's
# Ray settings (cluster/ray_env.py RAY_JOB_ENV) travel with it.
TRACKING_ENV, STORAGE_ENV = "MLFLOW_TRACKING_URI", "DEEPRIG_STORAGE"


def _quiet_logger() -> logging.Logger:
    """Ray logs every ignore file it honours and each upload step at INFO, and warns that
    .git/.venv are now left out by default; deeprig prints what it uploads instead."""
    logger = logging.getLogger("deeprig.upload")
    logger.setLevel(logging.ERROR)
    return logger


def jobs_client(address: str):
    """A Jobs API client for the dashboard at `address` (http://HEAD:8265)."""
    from ray.job_submission import JobSubmissionClient

    use_token_auth_if_available()
    for name in (
        "ray._private.runtime_env",
        # These two set INFO on themselves when imported.
        "ray.dashboard.modules.dashboard_sdk",
        "ray.dashboard.modules.job.sdk",
    ):
        logging.getLogger(name).setLevel(logging.ERROR)
    return JobSubmissionClient(address)


def dashboard_resources(address: str) -> ClusterResources:
    """What the cluster behind the dashboard at `address` has, read through Ray's state API
    (no driver is started on the cluster)."""
    from ray.util.state import list_nodes

    use_token_auth_if_available()
    # (a dead node cannot answer: without raise_on_missing_output=False Ray's state API
    # refuses the whole listing once any node of the cluster has died)
    nodes = list_nodes(
        address=address,
        filters=[("state", "=", "ALIVE")],
        detail=True,
        raise_on_missing_output=False,
    )
    totals = [node.resources_total or {} for node in nodes]
    node_cpus = [t.get("CPU", 0.0) for t in totals]
    return ClusterResources(
        cpus=sum(node_cpus),
        gpus=sum(t.get("GPU", 0.0) for t in totals),
        max_node_cpus=max(node_cpus, default=0.0),
        nodes=len(nodes),
        where=f"the cluster at {address}",
    )


# ------------------------------------------------------------------ the upload


@dataclass(frozen=True)
class WorkingDir:
    root: Path
    excludes: list[str]
    num_files: int
    num_bytes: int
    largest: list[tuple[int, str]]  # (bytes, path relative to root), biggest first


def upload_limit_bytes() -> int:
    """Ray's limit on a working directory package (its gRPC message size)."""
    from ray._private.runtime_env.packaging import GCS_STORAGE_MAX_SIZE

    return GCS_STORAGE_MAX_SIZE


def measure_working_dir(root: Path, excludes: list[str]) -> WorkingDir:
    """Walk the working directory exactly as Ray will package it: Ray's default excludes
    (.git, .venv, ...), the given ones, .gitignore and .rayignore files."""
    from ray._private import ray_constants
    from ray._private.runtime_env.packaging import _dir_travel, _get_excludes

    root = root.resolve()
    all_excludes = ray_constants.get_runtime_env_default_excludes() + list(excludes)
    include_gitignore = os.environ.get(ray_constants.RAY_RUNTIME_ENV_IGNORE_GITIGNORE) != "1"
    sizes: list[tuple[int, str]] = []

    def count(path: Path) -> None:
        if path.is_file():
            sizes.append((path.stat().st_size, str(path.relative_to(root))))

    _dir_travel(
        root, [_get_excludes(root, all_excludes)], count, include_gitignore, logger=_quiet_logger()
    )
    sizes.sort(reverse=True)
    return WorkingDir(root, list(excludes), len(sizes), sum(s for s, _ in sizes), sizes[:5])


def check_upload_size(working_dir: WorkingDir, limit: int | None = None) -> None:
    """Refuse, naming the biggest files, a working directory Ray would refuse after zipping
    it (its files' total size bounds the zip's)."""
    limit = upload_limit_bytes() if limit is None else limit
    if working_dir.num_bytes < limit:
        return
    biggest = ", ".join(f"{path} ({size / 2**20:.1f} MiB)" for size, path in working_dir.largest)
    raise SpecError(
        [
            Problem(
                "--working-dir",
                f"{working_dir.root} holds {working_dir.num_bytes / 2**20:.1f} MiB in "
                f"{working_dir.num_files} files to upload; Ray accepts at most "
                f"{limit / 2**20:.0f} MiB. Biggest: {biggest}. Exclude them with --exclude "
                "PATTERN, a .rayignore or .gitignore entry, or keep data on shared storage "
                "(a Parquet URI) instead of in the working directory",
            )
        ]
    )


# ------------------------------------------------------------------ submit and follow


@dataclass(frozen=True)
class Submission:
    entrypoint: str
    runtime_env: dict
    submission_id: str
    metadata: dict[str, str]


def build_submission(
    spec,
    job: Path,
    overrides: list[str],
    working_dir: WorkingDir,
    env_vars: dict[str, str],
) -> Submission:
    """What to send: `deeprig run` on the job's path inside the uploaded working directory,
    with deeprig's Ray settings and the given environment."""
    from deeprig.cluster.ray_env import RAY_JOB_ENV

    try:
        relative = job.resolve().relative_to(working_dir.root)
    except ValueError:
        raise SpecError(
            [
                Problem(
                    "JOB",
                    f"{job} is outside the working directory {working_dir.root}, so it would "
                    "not be uploaded: move it in, or pass --working-dir with a folder that "
                    "holds it",
                )
            ]
        ) from None
    command = ["deeprig", "run", relative.as_posix()]
    for override in overrides:
        command += ["--set", override]
    runtime_env = {
        "working_dir": str(working_dir.root),
        "env_vars": {**RAY_JOB_ENV, **env_vars},
    }
    if working_dir.excludes:
        runtime_env["excludes"] = list(working_dir.excludes)
    submission_id = f"deeprig-{spec.name}-{uuid.uuid4().hex[:8]}".replace("_", "-").lower()
    return Submission(
        entrypoint=shlex.join(command),
        runtime_env=runtime_env,
        submission_id=submission_id,
        metadata={
            JobMetadata.JOB: spec.name,
            JobMetadata.KIND: spec.kind,
            JobMetadata.SPEC: str(job),
            JobMetadata.EXPERIMENT: spec.experiment_name,
            **(
                {JobMetadata.TRACKING: without_credentials(tracking)}
                if (tracking := spec.tracking.uri or env_vars.get(TRACKING_ENV))
                else {}
            ),
        },
    )


def without_credentials(uri: str) -> str:
    """`uri` without a user:password@ part (MLflow accepts one; metadata must not hold it)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def submit(client, submission: Submission) -> str:
    return client.submit_job(
        entrypoint=submission.entrypoint,
        runtime_env=submission.runtime_env,
        submission_id=submission.submission_id,
        metadata=submission.metadata,
    )


def follow_logs(client, submission_id: str, write: Callable[[str], None]) -> str:
    """Stream the job's logs until it ends; return its final status."""

    async def tail() -> None:
        async for lines in client.tail_job_logs(submission_id):
            write(lines)

    asyncio.run(tail())
    return wait_for_end(client, submission_id, timeout_s=30.0)


def wait_for_end(client, submission_id: str, timeout_s: float, poll_s: float = 0.5) -> str:
    """The job's status once terminal (or the current one after `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = client.get_job_status(submission_id)
        if status.is_terminal() or time.monotonic() >= deadline:
            return str(status.value)
        time.sleep(poll_s)
