"""The `deeprig` command: parses arguments, loads the spec, dispatches. No domain logic.

Exit codes: 0 success, 1 the job failed, 2 bad input (nothing was started or recorded).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from deeprig.cluster.session import job_address
from deeprig.spec import SpecError, load_spec
from deeprig.spec.loader import with_lines

app = typer.Typer(
    help=(
        "deeprig: one YAML job spec for deep-learning training on Ray, every run in MLflow.\n\n"
        "Example: deeprig run jobs/quickstart.yaml"
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)
console = Console()
errors = Console(stderr=True)

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _report_spec_error(exc: SpecError, source: str) -> None:
    with contextlib.suppress(OSError):
        exc = with_lines(exc, Path(source).read_text())
    count = len(exc.problems)
    errors.print(f"[bold red]{source}: {count} problem{'s' if count > 1 else ''}[/]")
    for problem in exc.problems:
        errors.print(
            f"  {problem.render(exc.source or source)}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


SET_HELP = "Override a spec field: --set optim.lr=0.01 (value parsed as YAML; repeatable)."


@app.command()
def validate(
    job: Path = typer.Argument(..., help="Job spec (YAML)."),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    address: str = typer.Option(
        None, help="Check resources against this Ray cluster instead of this machine."
    ),
) -> None:
    """Check a job spec: exit 0, or exit 2 with every problem listed by field path.

    Checks the fields, then the data (path, columns, labels) and the resources the job
    asks for, without starting anything.

    Example: deeprig validate jobs/digits_cnn.yaml --set scaling.num_workers=2
    """
    from deeprig.cluster.resources import local_resources

    address = job_address(address)
    try:
        spec = load_spec(job, overrides)
        if address:
            from deeprig.cluster.resources import connected_resources
            from deeprig.cluster.session import ray_session

            with ray_session(address):
                summary = _check(spec, connected_resources())
        else:
            summary = _check(spec, local_resources())
    except SpecError as exc:
        _report_spec_error(exc, str(job))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    console.print(f"[green]ok[/] {job}: {spec.kind} job [bold]{spec.name}[/] - {summary}")


def _check(spec, resources) -> str:
    """Pre-flight checks of any kind of spec; returns a one-line summary."""
    from deeprig.runners.train import check_train_spec
    from deeprig.runners.tune import check_tune_spec

    if spec.kind == "rl":
        from deeprig.runners.rl import check_rl_spec

        check_rl_spec(spec)
        return f"{spec.algorithm} on {spec.env}"
    if spec.kind == "tune":
        checks = check_tune_spec(spec, resources)
        what = (
            f"{spec.base.algorithm} on {spec.base.env}"
            if spec.base.kind == "rl"
            else f"{spec.base.model.name} on {spec.base.data.source}"
        )
        return (
            f"{checks.num_trials} trials of {what}, "
            f"{checks.concurrency} at a time, {spec.search.algorithm} + {spec.scheduler.name}"
        )
    checks = check_train_spec(spec, resources)
    return (
        f"{spec.model.name} on {spec.data.source} ({checks.data.task}, "
        f"{checks.data.num_train} train rows, {checks.data.num_outputs} outputs), "
        f"{spec.scaling.num_workers} worker(s) x {checks.budget.cpus_per_worker:g} CPU"
    )


@app.command()
def run(
    job: Path = typer.Argument(..., help="Job spec (YAML)."),
    overrides: list[str] = typer.Option([], "--set", help=SET_HELP),
    address: str = typer.Option(
        None,
        help="Ray cluster to run on ('auto' for the local cluster that `ray start` made, "
        "ray://HEAD:10001). Omitted: a local Ray is started for the job.",
    ),
    resume: bool = typer.Option(
        False, "--resume", help="tune: continue the latest unfinished search of this name."
    ),
) -> None:
    """Run a job to the end with live progress; print the MLflow run and where to see it.

    Exit 0 when the job succeeds, 1 when it fails (its MLflow run is marked FAILED),
    2 for bad input (nothing is started or recorded).

    Example: deeprig run jobs/quickstart.yaml --set optim.lr=0.01
    """
    from deeprig.runners.train import run_train
    from deeprig.runners.tune import run_tune

    try:
        spec = load_spec(job, overrides)
    except SpecError as exc:
        _report_spec_error(exc, str(job))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    spec_text = _resolved_spec_text(job, overrides, spec)
    from deeprig.runners.rl import run_rl

    if resume and spec.kind == "train":
        errors.print("--resume applies to tune and rl jobs (a train job resumes its workers)")
        raise typer.Exit(EXIT_BAD_INPUT)
    options = {"resume": resume} if spec.kind != "train" else {}
    runner = {"train": run_train, "tune": run_tune, "rl": run_rl}[spec.kind]
    address = job_address(address)
    # `deeprig stop` / `ray job stop` send SIGTERM: end like Ctrl-C, the run marked KILLED.
    if threading.current_thread() is threading.main_thread():  # (tests run it in threads)
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        outcome = runner(
            spec, spec_text=spec_text, spec_path=job, address=address, console=console, **options
        )
    except SpecError as exc:
        _report_spec_error(exc, str(job))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except KeyboardInterrupt:
        errors.print("[yellow]interrupted: the MLflow run is marked KILLED[/]")
        raise typer.Exit(130) from None
    except Exception as exc:  # the job failed; its run is already marked FAILED
        errors.print_exception(max_frames=6)
        errors.print(f"[bold red]job failed:[/] {type(exc).__name__}: {exc}", highlight=False)
        raise typer.Exit(EXIT_FAILED) from None

    if spec.kind == "tune":
        _print_search_outcome(spec, outcome)
        return
    if spec.kind == "rl":
        _print_rl_outcome(spec, outcome)
        return
    _print_metrics(
        f"{spec.name}: best checkpoint",
        outcome,
        ("epoch", "train_loss", "val_loss", "val_accuracy", "val_rmse", "samples_per_s"),
    )
    if outcome.run_id:
        console.print(
            f"MLflow run [bold]{outcome.run_id}[/] ({outcome.tracking_uri})\n"
            f"  see it: [bold]deeprig ui[/] then open the experiment "
            f"'{spec.experiment_name}', or [bold]deeprig runs[/]"
        )


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _print_metrics(title: str, outcome, keys: tuple[str, ...], first=()) -> None:
    """A train or rl job's closing table: the given metrics it has, time and checkpoint."""
    table = Table(title=title, show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in first:
        table.add_row(name, value)
    for key in keys:
        if key in outcome.metrics:
            table.add_row(key, f"{outcome.metrics[key]:.4g}")
    console.print(table)
    console.print(f"finished in {outcome.seconds:.1f} s; checkpoint: {outcome.checkpoint_path}")


def _print_rl_outcome(spec, outcome) -> None:
    _print_metrics(
        f"{spec.name}: last iteration",
        outcome,
        (
            "episode_return_mean",
            "episode_len_mean",
            "num_env_steps_sampled_lifetime",
            "env_steps_per_s",
            "eval_episode_return_mean",
        ),
        first=[("iterations", str(outcome.iterations))],
    )
    if outcome.run_id:
        console.print(
            f"MLflow run [bold]{outcome.run_id}[/]; evaluate it: "
            f"[bold]deeprig eval {outcome.run_id} --episodes 10[/]"
        )


def _print_search_outcome(spec, outcome) -> None:
    table = Table(title=f"{spec.name}: best trial", show_header=True)
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row(f"best {spec.search.metric}", f"{outcome.best_metric:.4g}")
    for key, value in outcome.best_config.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    table.add_row("trials", str(outcome.num_trials))
    table.add_row("stopped early", str(outcome.num_stopped_early))
    unit = "iterations" if spec.base.kind == "rl" else "epochs"
    table.add_row(f"{unit} trained", str(outcome.total_epochs))
    console.print(table)
    console.print(f"finished in {outcome.seconds:.1f} s")
    if outcome.parent_run_id:
        console.print(
            f"MLflow parent run [bold]{outcome.parent_run_id}[/], one child run per trial\n"
            f"  see it: [bold]deeprig ui[/] then open the experiment '{spec.experiment_name}'"
        )


def _resolved_spec_text(job: Path, overrides: list[str], spec) -> str:
    """The spec as it ran: the file itself, or the validated spec when --set changed it."""
    if not overrides:
        return job.read_text()
    import yaml

    header = f"# {job} with --set {' --set '.join(overrides)}\n"
    return header + yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)


@app.command(name="eval")
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

    A run id's checkpoint is read from this machine when it is here, else downloaded from
    the run's artifacts (a tracking server, or a search's best trial).

    Example: deeprig eval 3f2a...e1 --episodes 20 --video cartpole.gif
    """
    from statistics import mean

    from deeprig.runners.rl import evaluate_checkpoint

    checkpoint = target
    if not Path(target).exists():
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        from deeprig.tracking.store import resolve_tracking

        try:
            run = MlflowClient(resolve_tracking(tracking_uri).uri).get_run(target)
        except MlflowException:
            errors.print(f"{target}: neither a checkpoint folder nor an MLflow run id")
            raise typer.Exit(EXIT_BAD_INPUT) from None
        checkpoint = run.data.tags.get("deeprig.checkpoint_path", "")
        if not checkpoint or not Path(checkpoint).exists():
            checkpoint = _download_checkpoint(resolve_tracking(tracking_uri).uri, target)
        if checkpoint is None:
            errors.print(f"run {target} has no rl checkpoint, here or in its artifacts")
            raise typer.Exit(EXIT_BAD_INPUT)
    from deeprig.cluster.session import ray_session

    with ray_session():
        returns = evaluate_checkpoint(checkpoint, episodes, seed, video)
    console.print(
        f"{episodes} episodes: mean return [bold]{mean(returns):.2f}[/] "
        f"(min {min(returns):.1f}, max {max(returns):.1f})"
    )
    if video:
        console.print(f"first episode recorded: {video}")


def _download_checkpoint(uri: str, run_id: str) -> str | None:
    """The newest checkpoint logged on the run (`checkpoints/iteration_N`, or a search
    parent's `checkpoints/best`), downloaded to a temporary folder."""
    import tempfile

    from mlflow import MlflowClient

    client = MlflowClient(uri)
    logged = sorted(a.path for a in client.list_artifacts(run_id, "checkpoints") if a.is_dir)
    if not logged:
        return None
    return client.download_artifacts(run_id, logged[-1], tempfile.mkdtemp(prefix="deeprig-"))


@app.command()
def runs(
    experiment: str = typer.Option(None, "--experiment", "-e", help="Only this experiment."),
    limit: int = typer.Option(20, help="Most recent N runs."),
    tracking_uri: str = typer.Option(None, help="MLflow store (default: as for `run`)."),
) -> None:
    """List recorded runs as a table: job, kind, status, key metric, duration.

    Example: deeprig runs --experiment digits --limit 5
    """
    from deeprig.tracking.listing import list_runs
    from deeprig.tracking.store import resolve_tracking

    target = resolve_tracking(tracking_uri)
    rows = list_runs(target, experiment, limit)
    table = Table(title=f"runs in {target.uri}")
    for column in (
        "run id",
        "experiment",
        "job",
        "kind",
        "status",
        "metric",
        "value",
        "duration",
        "started",
    ):
        table.add_column(column, justify="right" if column in ("value", "duration") else "left")
    for row in rows:
        table.add_row(*row)
    console.print(table if rows else f"no runs yet in {target.uri}")


@app.command()
def ui(
    port: int = typer.Option(5000, help="Port to serve on."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (127.0.0.1: this machine only)."),
    tracking_uri: str = typer.Option(None, help="MLflow store (default: as for `run`)."),
) -> None:
    """Open the MLflow UI (the experiment tracking UI) over the configured store.

    Example: deeprig ui --port 5000, then browse http://127.0.0.1:5000
    """
    from deeprig.tracking.store import resolve_tracking

    target = resolve_tracking(tracking_uri)
    if target.uri.startswith("http"):
        console.print(f"runs live on a tracking server: open {target.uri}")
        return
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        target.uri,
        "--host",
        host,
        "--port",
        str(port),
    ]
    if target.artifact_root:
        command += ["--default-artifact-root", target.artifact_root]
    console.print(f"MLflow UI over {target.uri} at [bold]http://{host}:{port}[/] (Ctrl-C stops)")
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    # Become the MLflow server rather than wait on it: Ctrl-C and a service manager's
    # SIGTERM then reach it directly, and no orphan is left behind.
    os.execve(sys.executable, command, env)


# Cluster verbs live in their own module; registered here so `deeprig --help` lists all.
from deeprig import cli_cluster  # noqa: E402

app.command()(cli_cluster.submit)
app.command()(cli_cluster.status)
app.command()(cli_cluster.logs)
app.command()(cli_cluster.stop)
app.command(name="list")(cli_cluster.list_jobs)
app.add_typer(cli_cluster.cluster_app, name="cluster")

if __name__ == "__main__":
    app()
