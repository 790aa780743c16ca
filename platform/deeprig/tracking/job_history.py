"""What was submitted to a cluster, kept in MLflow: Ray's job table lives in the cluster's
GCS and is gone with the cluster, the tracking store is not.

When deeprig sees a submitted job end (`submit` following it, `stop`, `status`, `logs
-f`), it records on the job's MLflow run (found by its `deeprig.ray_submission_id` tag)
the entrypoint, the cluster's address, the final status with Ray's message, and the
driver's whole log as the artifact `logs/driver.log`. A job that failed before it made a
run (a bad spec on the cluster, an import error) gets a run of its own, FAILED, with its
log. `deeprig list --history` reads these back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import ViewType

from deeprig.tracking.key_metric import key_metric
from deeprig.tracking.store import TrackingTarget
from deeprig.tracking.tags import RunStatus, Tag

DRIVER_LOG = "logs/driver.log"
# A Ray job's final status -> its run's, for a run the job left unfinished.
RUN_STATUS_OF = {
    "SUCCEEDED": RunStatus.FINISHED,
    "STOPPED": RunStatus.KILLED,
    "FAILED": RunStatus.FAILED,
}
HISTORY_COLUMNS = (
    "submission_id",
    "job",
    "status",
    "ended",
    "run_id",
    "metric",
    "value",
    "message",
)


@dataclass(frozen=True)
class JobEnd:
    submission_id: str
    job: str  # the spec's name
    kind: str
    experiment: str
    entrypoint: str
    address: str  # the cluster's Jobs API
    status: str  # SUCCEEDED | FAILED | STOPPED
    message: str
    log: str


def record_job_end(target: TrackingTarget, end: JobEnd) -> str:
    """Record `end` on the job's run (made, FAILED, when the job made none); its run id.
    Recording twice changes nothing."""
    client = MlflowClient(target.uri)
    run = find_job_run(client, end.submission_id)
    if run is None:
        experiment = client.get_experiment_by_name(end.experiment)
        experiment_id = (
            experiment.experiment_id if experiment else client.create_experiment(end.experiment)
        )
        run = client.create_run(
            experiment_id,
            run_name=f"{end.job}-failed-to-start",
            tags={
                Tag.JOB_NAME: end.job,
                Tag.KIND: end.kind,
                Tag.RAY_SUBMISSION_ID: end.submission_id,
                Tag.FAILURE: "failed_before_training",
            },
        )
    run_id = run.info.run_id
    if run.data.tags.get(Tag.JOB_STATUS) == end.status:
        return run_id
    client.log_text(run_id, end.log, DRIVER_LOG)
    client.set_tag(run_id, Tag.JOB_ENTRYPOINT, end.entrypoint[:5000])
    client.set_tag(run_id, Tag.JOB_ADDRESS, end.address)
    client.set_tag(run_id, Tag.JOB_MESSAGE, (end.message or "")[:5000])
    client.set_tag(run_id, Tag.JOB_STATUS, end.status)
    if client.get_run(run_id).info.status == RunStatus.RUNNING:
        client.set_terminated(run_id, RUN_STATUS_OF.get(end.status, RunStatus.FAILED))
    return run_id


def find_job_run(client: MlflowClient, submission_id: str) -> Any:
    experiments = [e.experiment_id for e in client.search_experiments(ViewType.ACTIVE_ONLY)]
    if not experiments:
        return None
    runs = client.search_runs(
        experiments,
        filter_string=f"tags.`{Tag.RAY_SUBMISSION_ID}` = '{submission_id}'",
        max_results=1,
    )
    return runs[0] if runs else None


def job_history(
    target: TrackingTarget, limit: int, untagged: Mapping[str, Sequence[str]]
) -> list[dict[str, Any]]:
    """The submitted jobs the store recorded, newest first; `untagged` as list_runs'."""
    client = MlflowClient(target.uri)
    experiments = [e.experiment_id for e in client.search_experiments(ViewType.ACTIVE_ONLY)]
    if not experiments:
        return []
    runs = client.search_runs(
        experiments,
        filter_string=f"tags.`{Tag.JOB_STATUS}` != ''",
        order_by=["attributes.start_time DESC"],
        max_results=limit,
    )
    records = []
    for run in runs:
        key = key_metric(run.data.tags, run.data.metrics, untagged)
        records.append(
            {
                "submission_id": run.data.tags.get(Tag.RAY_SUBMISSION_ID, ""),
                "job": run.data.tags.get(Tag.JOB_NAME, ""),
                "status": run.data.tags.get(Tag.JOB_STATUS, ""),
                "ended": _when(run.info.end_time),
                "run_id": run.info.run_id,
                "metric": key[0] if key else "",
                "value": key[1] if key else None,
                "message": run.data.tags.get(Tag.JOB_MESSAGE, ""),
            }
        )
    return records


def recorded_log(target: TrackingTarget, submission_id: str, artifacts_root: Path | None) -> str:
    """A job's recorded driver log. `artifacts_root`: where a stopped local server kept
    its proxied artifacts (mlflow-artifacts:/...), read straight from disk."""
    client = MlflowClient(target.uri)
    run = find_job_run(client, submission_id)
    if run is None:
        raise LookupError(f"no run in {target.uri} records the job {submission_id}")
    proxied = "mlflow-artifacts:/"
    if artifacts_root is not None and run.info.artifact_uri.startswith(proxied):
        relative = run.info.artifact_uri[len(proxied) :].lstrip("/")
        return (artifacts_root / relative / DRIVER_LOG).read_text()
    return Path(client.download_artifacts(run.info.run_id, DRIVER_LOG)).read_text()


def _when(millis: int | None) -> str:
    return datetime.fromtimestamp(millis / 1000).strftime("%Y-%m-%d %H:%M") if millis else ""
