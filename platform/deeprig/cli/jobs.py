"""The verbs that run work here or on a cluster the driver joins: validate, run, eval."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

import typer

from deeprig.cli.common import (
    SET_HELP,
    ExitCode,
    bad_spec,
    check_spec,
    console,
    errors,
    load_spec_or_exit,
    run_to_its_end,
)
from deeprig.cluster.session import job_address
from deeprig.spec import SpecError


def validate(
    job: Path = typer.Argument(..., help="Job spec (YAML)."),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    address: str = typer.Option(
        None, help="Check resources against this Ray cluster instead of this machine."
    ),
) -> None:
    """Check a job spec: exit 0, or exit 2 with every problem listed by field path.

    Checks the fields, then the data (path, columns, labels) and the resources
    the job asks for, without starting anything.

    Example: deeprig validate jobs/digits_cnn.yaml --set scaling.num_workers=2
    """
    from deeprig.cluster.resources import local_resources

    cluster = job_address(address)
    spec = load_spec_or_exit(job, overrides)
    try:
        if cluster:
            from deeprig.cluster.resources import connected_resources
            from deeprig.cluster.session import ray_session

            with ray_session(cluster):
                summary = check_spec(spec, connected_resources())
        else:
            summary = check_spec(spec, local_resources())
    except SpecError as exc:
        bad_spec(exc, job)
    console.print(f"[green]ok[/] {job}: {spec.kind} job [bold]{spec.name}[/] - {summary}")


def run(
    job: Path = typer.Argument(..., help="Job spec (YAML)."),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    address: str = typer.Option(
        None,
        help="Ray cluster to run on ('auto' for the local cluster that `ray start` made, "
        "ray://HEAD:10001). Omitted: a local Ray is started for the job.",
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue the newest unfinished run of this job (its driver died: SIGKILL, a "
        "closed laptop, a lost SSH session) from its latest checkpoint, in the same MLflow run.",
    ),
    verbose: bool = typer.Option(
        False,
        "--verbose",
        help="Show Ray's and MLflow's own messages here too; else they go to "
        "$DEEPRIG_HOME/logs/run-<time>.log and Ray's worker logs "
        "(/tmp/ray/session_latest/logs); deeprig reports failures itself.",
    ),
) -> None:
    """Run a job to the end with live progress; print the MLflow run and where to see it.

    Exit 0 when the job succeeds, 1 when it fails (its MLflow run is marked
    FAILED), 2 for bad input (nothing is started or recorded).

    Example: deeprig run jobs/quickstart.yaml --set optim.lr=0.01
    """
    from deeprig.runners import RUNNERS, Job

    spec = load_spec_or_exit(job, overrides)
    runner = RUNNERS[spec.kind]
    if resume and runner.resumes is None:
        resumable = " and ".join(k for k, r in RUNNERS.items() if r.resumes)
        errors.print(
            f"--resume applies to {resumable} jobs (a {spec.kind} job resumes its workers)"
        )
        raise typer.Exit(ExitCode.BAD_INPUT)
    context = Job(
        spec_text=_resolved_spec_text(job, overrides, spec),
        spec_path=job,
        address=job_address(address),
        resume=resume,
        verbose=verbose,
        console=console,
    )
    run_to_its_end(
        lambda: runner.run(spec, context),
        context.home,
        "run",
        verbose,
        job,
        "the MLflow run is marked KILLED",
    )


def _resolved_spec_text(job: Path, overrides: list[str], spec: Any) -> str:
    """The spec as it ran: the file itself, or the validated spec when --set changed it."""
    if not overrides:
        return job.read_text()
    import yaml

    header = f"# {job} with --set {' --set '.join(overrides)}\n"
    return header + yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)


def evaluate(
    target: str = typer.Argument(..., help="An rl run's MLflow run id, or a checkpoint folder."),
    episodes: int = typer.Option(10, min=1, help="Episodes to roll out."),
    seed: int = typer.Option(0, help="Seed of the first episode's environment."),
    tracking_uri: str = typer.Option(None, help="MLflow store (default: as for `run`)."),
    video: Path = typer.Option(
        None, help="Record the first episode as an animated GIF here (envs with rgb_array)."
    ),
) -> None:
    """Roll out a trained rl policy (greedy actions) and print its mean return.

    A run id's checkpoint is read from this machine when it is here, else
    downloaded from the run's artifacts (a tracking server, or a search's best
    trial). A train run has no policy: eval says what scores its model instead.

    Example: deeprig eval 3f2a...e1 --episodes 20 --video cartpole.gif
    """
    from statistics import mean

    from deeprig.cluster.session import ray_session
    from deeprig.runners.rl_eval import evaluate_checkpoint

    if Path(target).exists():
        if (Path(target) / "checkpoint.pt").exists():
            _not_an_rl_run(f"{target} is a train job's checkpoint", None)
        checkpoint = target
    else:
        checkpoint = _run_checkpoint(target, tracking_uri)
    with ray_session():
        returns = evaluate_checkpoint(checkpoint, episodes, seed, video)
    console.print(
        f"{episodes} episodes: mean return [bold]{mean(returns):.2f}[/] "
        f"(min {min(returns):.1f}, max {max(returns):.1f})"
    )
    if video:
        console.print(f"first episode recorded: {video}")


def _run_checkpoint(run_id: str, tracking_uri: str | None) -> str:
    """The rl checkpoint of a run: its folder on this machine when it is here, else the
    newest one in its artifacts, downloaded. Exit 2 when there is none."""
    from deeprig.cluster.tracking_target import resolve_tracking
    from deeprig.tracking.runs import download_latest_checkpoint, find_run
    from deeprig.tracking.tags import Tag

    target = resolve_tracking(tracking_uri, given_by="--tracking-uri")
    recorder = find_run(target, run_id)
    if recorder is None:
        errors.print(
            f"{run_id}: neither a checkpoint folder nor an MLflow run id in {target.described}"
        )
        raise typer.Exit(ExitCode.BAD_INPUT)
    tags = recorder.tags()
    kind = tags.get(Tag.KIND, "")
    if kind == "tune":  # a search: what its trials are
        kind = recorder.client.get_run(run_id).data.params.get("base.kind", kind)
    if kind == "train":
        _not_an_rl_run(f"run {run_id} is a {tags.get(Tag.KIND)} run of a train job", run_id)
    local = tags.get(Tag.CHECKPOINT_PATH, "")
    if local and Path(local).exists():
        return local
    downloaded = download_latest_checkpoint(recorder)
    if downloaded is None:
        errors.print(f"run {run_id} has no rl checkpoint, here or in its artifacts")
        raise typer.Exit(ExitCode.BAD_INPUT)
    return downloaded


def _not_an_rl_run(what: str, run_id: str | None) -> NoReturn:
    """Exit 2 before RLlib is touched: eval rolls out rl policies, and says what a trained
    model is used with instead."""
    model = f'mlflow.pyfunc.load_model("runs:/{run_id}/model").predict(rows)' if run_id else ""
    errors.print(
        f"{what}; `deeprig eval` rolls out rl policies. A train job's best model is logged "
        f"on its MLflow run: score it with {model or 'its run id: runs:/RUN_ID/model'}, or "
        "give the spec data.test_path to score it on a test set after training",
        soft_wrap=True,
        highlight=False,
        markup=False,
    )
    raise typer.Exit(ExitCode.BAD_INPUT)
