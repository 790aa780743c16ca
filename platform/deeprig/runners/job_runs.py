"""The MLflow run of a job, as every runner opens it: a new one, or (with --resume) the
newest unfinished run of the same job, reopened."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from deeprig.spec.errors import Problem, SpecError
from deeprig.tracking.store import TrackingTarget


def create_job_run(spec, spec_text: str, spec_path: Path, target: TrackingTarget):
    import ray

    from deeprig.tracking.runs import RunRecorder

    return RunRecorder.create(
        target,
        spec.experiment_name,
        spec.model_dump(mode="json"),
        spec_text,
        spec_path.resolve().parent,
        ray_job_id=ray.get_runtime_context().get_job_id(),
    )


def find_unfinished_run(spec, target: TrackingTarget | None, what: str):
    """The newest run of this job (same kind and name) that did not finish; SpecError when
    there is none. Called before Ray starts, so a wrong --resume costs nothing."""
    from mlflow import MlflowClient

    from deeprig.tracking.runs import RunRecorder

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
                f"tags.`deeprig.kind` = '{spec.kind}' AND tags.`deeprig.job_name` = '{spec.name}'"
            ),
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if experiment
        else []
    )
    if not runs or runs[0].info.status == "FINISHED":
        raise refuse(
            f"no unfinished {what} named {spec.name!r} to resume; run it without --resume to "
            "start one"
        )
    return RunRecorder(target, runs[0].info.run_id)


def open_job_run(
    spec,
    spec_text: str,
    spec_path: Path,
    target: TrackingTarget | None,
    resumed,
    console: Console,
):
    """Reopen `resumed` (from find_unfinished_run) or create the job's run; None when
    tracking is off."""
    if resumed is not None:
        resumed.client.update_run(resumed.run_id, status="RUNNING")
        console.print(f"Resuming MLflow run [bold]{resumed.run_id}[/]")
        return resumed
    if target is None:
        return None
    recorder = create_job_run(spec, spec_text, spec_path, target)
    console.print(
        f"MLflow run [bold]{recorder.run_id}[/] in experiment "
        f"[bold]{spec.experiment_name}[/] ({target.uri})"
    )
    return recorder
