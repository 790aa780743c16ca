"""Recorded runs as records for `deeprig runs`: one dict a run, whole values (the CLI
decides what fits on the screen). A search's trial runs follow their parent run, only when
asked for: the newest runs of the store are jobs, not the trials of one search."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Run, ViewType

from deeprig.tracking.key_metric import key_metric
from deeprig.tracking.store import TrackingTarget
from deeprig.tracking.tags import MLFLOW_PARENT_RUN_ID, Tag

COLUMNS = (
    "run_id",
    "parent_run_id",
    "experiment",
    "job",
    "kind",
    "status",
    "metric",
    "value",
    "trials",
    "duration_s",
    "started",
    "store",
)


class NoSuchExperiment(LookupError):
    def __init__(self, name: str, known: list[str]):
        super().__init__(name)
        self.name = name
        self.known = known


def list_runs(
    target: TrackingTarget,
    experiment: str | None,
    limit: int,
    untagged: Mapping[str, Sequence[str]],
    trials: bool = False,
) -> list[dict[str, Any]]:
    """The newest `limit` runs that are not a search's trials (of `experiment`, else of
    every experiment), newest first; with `trials`, each search's trial runs right after
    it. `untagged`: each kind's key metrics for runs recorded before their key metric tag
    (key_metric.py). NoSuchExperiment when `experiment` is not in the store."""
    client = MlflowClient(target.uri)
    experiments = list(client.search_experiments(view_type=ViewType.ACTIVE_ONLY))
    if experiment:
        chosen = [e for e in experiments if e.name == experiment]
        if not chosen:
            raise NoSuchExperiment(experiment, sorted(e.name for e in experiments))
        experiments = chosen
    if not experiments:
        return []
    names = {e.experiment_id: e.name for e in experiments}
    runs = client.search_runs(
        list(names),
        filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` IS NULL",
        order_by=["attributes.start_time DESC"],
        max_results=limit,
    )
    records = []
    for run in runs:
        children = _trial_runs(client, run) if run.data.tags.get(Tag.KIND) == "tune" else []
        records.append(_record(run, names, target, untagged, len(children)))
        if trials:
            records += [_record(child, names, target, untagged, 0) for child in children]
    return records


def _trial_runs(client: MlflowClient, parent: Run) -> list[Run]:
    """A search's trial runs, oldest first."""
    return list(
        client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent.info.run_id}'",
            order_by=["attributes.start_time ASC"],
        )
    )


def _record(
    run: Run,
    names: dict[str, str],
    target: TrackingTarget,
    untagged: Mapping[str, Sequence[str]],
    trials: int,
) -> dict[str, Any]:
    info, data = run.info, run.data
    key = key_metric(data.tags, data.metrics, untagged)
    end = info.end_time or int(datetime.now().timestamp() * 1000)
    return {
        "run_id": info.run_id,
        "parent_run_id": data.tags.get(MLFLOW_PARENT_RUN_ID, ""),
        "experiment": names.get(info.experiment_id, info.experiment_id),
        "job": data.tags.get(Tag.JOB_NAME, info.run_name or ""),
        "kind": data.tags.get(Tag.KIND, ""),
        "status": info.status,
        "metric": key[0] if key else "",
        "value": key[1] if key else None,
        "trials": trials,
        "duration_s": round((end - info.start_time) / 1000, 1),
        "started": datetime.fromtimestamp(info.start_time / 1000).strftime("%Y-%m-%d %H:%M"),
        "store": target.uri,
    }
