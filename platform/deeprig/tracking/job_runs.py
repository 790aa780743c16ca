"""The MLflow run of a job, as every runner opens it: a new one, or (with --resume) the
newest unfinished run of the same job, reopened. (A search's trial runs: tracking/trials.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from deeprig.spec.errors import Problem, SpecError
from deeprig.tracking.drivers import driver_tags
from deeprig.tracking.new_runs import known_as
from deeprig.tracking.runs import RunRecorder
from deeprig.tracking.store import TrackingTarget
from deeprig.tracking.tags import RunStatus, Tag


def create_job_run(
    spec: Any, spec_text: str, spec_path: Path, target: TrackingTarget, ray_job_id: str | None
) -> RunRecorder:
    return RunRecorder.create(
        target,
        spec.experiment_name,
        spec.model_dump(mode="json"),
        spec_text,
        spec_path.resolve().parent,
        ray_job_id=ray_job_id,
        spec_path=spec_path.resolve(),
        extra_tags=driver_tags(),
    )


def find_unfinished_run(spec: Any, target: TrackingTarget | None, what: str) -> RunRecorder:
    """The newest run of this job (same kind and name) that did not finish; SpecError when
    there is none. Called before Ray starts, so a wrong --resume costs nothing."""

    def refuse(why: str) -> SpecError:
        return SpecError([Problem("--resume", why)])

    if target is None:
        raise refuse(f"resuming needs tracking (tracking.enabled: true) to find the {what}")
    client = MlflowClient(target.uri)
    experiment = client.get_experiment_by_name(spec.experiment_name)
    runs = (
        client.search_runs(
            [experiment.experiment_id],
            filter_string=(
                f"tags.`{Tag.KIND}` = '{spec.kind}' AND tags.`{Tag.JOB_NAME}` = '{spec.name}'"
            ),
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if experiment
        else []
    )
    if not runs or runs[0].info.status == RunStatus.FINISHED:
        raise refuse(
            f"no unfinished {what} named {spec.name!r} to resume; run it without --resume to "
            "start one"
        )
    run_id = runs[0].info.run_id
    if provisional := runs[0].data.tags.get(Tag.PROVISIONAL_RUN_ID):
        # (made once its server answered: the job named its Ray Train run and its
        # checkpoints after the id it knew then)
        known_as(provisional, run_id, spec.experiment_name)
        return RunRecorder(target, provisional)
    return RunRecorder(target, run_id)
