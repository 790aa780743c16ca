"""Recorded runs as rows for `deeprig runs`."""

from __future__ import annotations

from datetime import datetime

from mlflow import MlflowClient
from mlflow.entities import ViewType

from deeprig.tracking.store import TrackingTarget
from deeprig.tracking.tags import Tag

# The metric that says how good a run is, per kind, in order of preference.
KEY_METRICS = ("val_accuracy", "val_rmse", "episode_return_mean", "val_loss")


def list_runs(target: TrackingTarget, experiment: str | None, limit: int) -> list[tuple[str, ...]]:
    client = MlflowClient(target.uri)
    if experiment:
        found = client.get_experiment_by_name(experiment)
        experiments = [found] if found else []
    else:
        experiments = client.search_experiments(view_type=ViewType.ACTIVE_ONLY)
    if not experiments:
        return []
    names = {e.experiment_id: e.name for e in experiments}
    runs = client.search_runs(
        list(names), order_by=["attributes.start_time DESC"], max_results=limit
    )
    rows: list[tuple[str, ...]] = []
    for run in runs:
        info, data = run.info, run.data
        key = next((k for k in KEY_METRICS if k in data.metrics), None)
        end = info.end_time or int(datetime.now().timestamp() * 1000)
        rows.append(
            (
                info.run_id[:12],
                names.get(info.experiment_id, info.experiment_id),
                data.tags.get(Tag.JOB_NAME, info.run_name or ""),
                data.tags.get(Tag.KIND, ""),
                info.status,
                key or "",
                f"{data.metrics[key]:.4g}" if key else "",
                f"{(end - info.start_time) / 1000:.1f} s",
                datetime.fromtimestamp(info.start_time / 1000).strftime("%Y-%m-%d %H:%M"),
            )
        )
    return rows
