"""Recorded runs as records for `deeprig runs`: one dict a run, whole values (the CLI
decides what fits on the screen)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import ViewType

from deeprig.tracking.store import TrackingTarget
from deeprig.tracking.tags import Tag

# The metric that says how good a run is, per kind, in order of preference.
KEY_METRICS = ("val_accuracy", "val_rmse", "episode_return_mean", "best_val_accuracy", "val_loss")
COLUMNS = (
    "run_id",
    "experiment",
    "job",
    "kind",
    "status",
    "metric",
    "value",
    "duration_s",
    "started",
)


class NoSuchExperiment(LookupError):
    def __init__(self, name: str, known: list[str]):
        super().__init__(name)
        self.name = name
        self.known = known


def list_runs(target: TrackingTarget, experiment: str | None, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` runs (of `experiment`, else of every experiment), newest first.
    NoSuchExperiment when `experiment` is not in the store."""
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
        list(names), order_by=["attributes.start_time DESC"], max_results=limit
    )
    records = []
    for run in runs:
        info, data = run.info, run.data
        key = next((k for k in KEY_METRICS if k in data.metrics), None)
        end = info.end_time or int(datetime.now().timestamp() * 1000)
        records.append(
            {
                "run_id": info.run_id,
                "experiment": names.get(info.experiment_id, info.experiment_id),
                "job": data.tags.get(Tag.JOB_NAME, info.run_name or ""),
                "kind": data.tags.get(Tag.KIND, ""),
                "status": info.status,
                "metric": key or "",
                "value": data.metrics[key] if key else None,
                "duration_s": round((end - info.start_time) / 1000, 1),
                "started": datetime.fromtimestamp(info.start_time / 1000).strftime(
                    "%Y-%m-%d %H:%M"
                ),
            }
        )
    return records
