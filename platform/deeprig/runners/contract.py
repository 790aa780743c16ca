"""What every runner is, and the skeleton every runner's `run` shares.

A runner is one kind of work (train, tune, rl); its `Runner` row (runners/kinds.py) holds
every fact about the kind. It offers two things:
- `check(spec, resources) -> Checked`: every pre-flight check that needs the data, the
  environment or the hardware, all problems at once (SpecError: exit 2, nothing started);
  `Checked.summary` is the one line `deeprig validate` prints.
- `run(spec, job) -> Outcome`: the job to the end; `Outcome.render` prints its closing
  table. A failure is classified (a `JobFailure`, deeprig.failures), tagged on the job's
  MLflow run (`deeprig.failure`), marks the run FAILED (Ctrl-C: KILLED) and propagates.

`run_job` is the skeleton each `run` hands its body to: check before Ray starts when the
job runs here (`check_on_cluster` once connected when it runs there), find
the run to resume, start or join Ray, open the MLflow run, and close it on any failure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from rich.console import Console

from deeprig.runners.stages import StageClock
from deeprig.spec.errors import SpecError
from deeprig.tracking.store import TrackingTarget, deeprig_home
from deeprig.tracking.tags import RunStatus

if TYPE_CHECKING:  # (importing them costs mlflow's import; `--help` should not pay it)
    from deeprig.cluster.preflight import CheckpointStorage
    from deeprig.cluster.resources import ClusterResources
    from deeprig.failures import JobFailure, UserCode
    from deeprig.runners.tune.trial import SearchBase
    from deeprig.spec.loader import JobSpec
    from deeprig.tracking.null import NullRecorder
    from deeprig.tracking.runs import RunRecorder
    from deeprig.usercode import CodeBundle


class Checked(Protocol):
    """What a runner's pre-flight learned."""

    @property
    def summary(self) -> str: ...


class Outcome(Protocol):
    """How a job ended, as its runner reports it."""

    def render(self, console: Console) -> None: ...


SpecT = TypeVar("SpecT")
KindSpecT = TypeVar("KindSpecT", bound="JobSpec")
CheckedT = TypeVar("CheckedT", bound=Checked)


@dataclass(frozen=True)
class Job:
    """What the CLI hands a runner besides the spec."""

    spec_text: str  # the spec as it ran (recorded on the run)
    spec_path: Path
    address: str | None = None  # a running Ray cluster; None starts a local Ray
    resume: bool = False
    # Ray's and MLflow's own messages on this terminal too (else in their log files).
    verbose: bool = True
    console: Console = field(default_factory=Console)
    home: Path = field(default_factory=deeprig_home)


@dataclass(frozen=True)
class Runner(Generic[KindSpecT]):
    """One row of the runner table (runners/kinds.py): every fact about one kind."""

    check: Callable[[KindSpecT, ClusterResources], Checked]
    run: Callable[[KindSpecT, Job], Outcome]
    # What `--resume` continues for this kind ("search", "rl run"); None: it cannot.
    resumes: str | None
    # Where the job's workers write checkpoints that every node of a cluster must reach;
    # None when the driver keeps them (an rl job's; MLflow gets a copy).
    storage: Callable[[KindSpecT], CheckpointStorage | None]
    # The metrics that say how good a run of this kind is, most telling first: what
    # `deeprig runs` shows for a run recorded before its deeprig.key_metric tag.
    key_metrics: tuple[str, ...]
    # How a search runs over a spec of this kind; None: it cannot be a search's base.
    search_base: SearchBase | None


@dataclass(frozen=True)
class JobRun(Generic[SpecT, CheckedT]):
    """What a runner's body gets from the skeleton."""

    spec: SpecT
    checked: CheckedT
    recorder: RunRecorder | NullRecorder  # a NullRecorder (falsy) when tracking is off
    target: TrackingTarget | None
    job: Job
    resumed: bool
    clock: StageClock = field(default_factory=StageClock)  # where the job's time goes


def run_job(
    spec: Any,
    job: Job,
    check: Callable[[Any, ClusterResources], CheckedT],
    body: Callable[[JobRun[Any, CheckedT]], Any],
    resumes: str | None = None,
    check_resumed: Callable[[Any, CheckedT, str, Job], None] | None = None,
) -> Any:
    """Check, start or join Ray, open (or reopen) the MLflow run, run `body`, and mark the
    run FAILED / KILLED if anything on the way fails. `check_resumed(spec, checked, run id,
    job)`: what the kind checks of the run `--resume` continues (SpecError), before Ray."""
    import ray

    from deeprig.cluster.resources import connected_resources, local_resources
    from deeprig.cluster.session import ray_session
    from deeprig.cluster.tracking_target import resolve_tracking
    from deeprig.tracking.store import configured_storage
    from deeprig.tracking.warm_up import warm_up_store

    clock = StageClock()
    target = resolve_tracking(spec.tracking.uri, job.home) if spec.tracking.enabled else None
    with clock.stage("checks"):
        checked = None if job.address else check(spec, local_resources())
        resumed = None
        if job.resume and resumes:
            from deeprig.tracking.job_runs import find_unfinished_run

            resumed = find_unfinished_run(spec, target, resumes)
            if check_resumed is not None and checked is not None:
                check_resumed(spec, checked, resumed.run_id, job)
        code = user_code_of(spec)
    py_modules = code.py_modules() if code else None
    if not ray.is_initialized():
        where = f"joining the Ray cluster at {job.address}" if job.address else "starting Ray"
        job.console.print(f"[dim]{where}...[/]")
    # MLflow (~1 s to import) and its store start in a thread while Ray starts; a resumed
    # run's store is open already (the checks found the run in it).
    store_ready = warm_up_store(target) if target is not None and resumed is None else None
    clock.begin("ray_start")
    with ray_session(job.address, py_modules=py_modules, show_worker_output=job.verbose):
        clock.end("ray_start")
        if checked is None:
            with clock.stage("checks"):
                checked = check_on_cluster(
                    spec,
                    connected_resources(),
                    target.uri if target else None,
                    configured_storage(None),
                    check,
                )
        with clock.stage("run_create"):
            if store_ready is not None:
                store_ready.join()
            recorder = _open_run(spec, job, target, resumed)
        with closed_on_failure(recorder), recorder.system_metrics():
            if resumed is None and code is not None:
                recorder.log_code(code.artifact_files(), code.manifest(), code.sha256)
            run = JobRun(spec, checked, recorder, target, job, resumed is not None, clock)
            try:
                outcome = body(run)
            except SpecError:  # bad input found late: exit 2, as before Ray started
                raise
            except Exception as exc:
                raise _tagged_failure(exc, spec, code, recorder) from exc
            if recorder and recorder.waits_in and (created := recorder.created_as()):
                job.console.print(f"its tracking server made the run: [bold]{created}[/]")
            return outcome


@contextmanager
def closed_on_failure(recorder: RunRecorder | NullRecorder) -> Iterator[None]:
    """A run never stays RUNNING: an interrupted job ends KILLED, a failed one FAILED."""
    try:
        yield
    except KeyboardInterrupt:
        recorder.finish(RunStatus.KILLED)
        raise
    except BaseException:
        recorder.finish(RunStatus.FAILED)
        raise


def check_on_cluster(
    spec: Any,
    resources: ClusterResources,
    tracking_uri: str | None,
    storage: str | None,
    check: Callable[[Any, ClusterResources], CheckedT],
) -> CheckedT:
    """Every check of a job bound for a running cluster, the same for `submit` (before the
    upload) and `run --address` (on the cluster): the kind's own (`check`, its row's)
    against the cluster's resources, runs and checkpoints every node reaches, user code
    that travels with the job. `tracking_uri` / `storage`: where the job records and
    checkpoints unless its spec says (None: the embedded defaults). SpecError on any
    problem."""
    from deeprig.cluster.preflight import check_shared_state
    from deeprig.runners import RUNNERS

    checked = check(spec, resources)
    kept = RUNNERS[spec.kind].storage(spec)
    check_shared_state(spec, resources, tracking_uri, kept, storage)
    check_code_reaches_workers(user_code_of(spec))
    return checked


def _tagged_failure(
    exc: Exception, spec: Any, code: CodeBundle | None, recorder: RunRecorder | NullRecorder
) -> JobFailure:
    """`exc` classified (deeprig.failures), its class tagged on the run (closed_on_failure
    then marks it FAILED)."""
    from deeprig.failures import classify
    from deeprig.tracking.tags import Tag

    failure = classify(exc, user_frames(spec, code))
    recorder.set_tags({Tag.FAILURE: failure.kind.value})
    return failure


def user_frames(spec: Any, code: CodeBundle | None) -> UserCode:
    """Whose frames are the user's: the modules under `code.paths` and those the spec's
    targets name (a search's: its base's; an rl job's env given as `module:Class`)."""
    from deeprig.failures import UserCode

    modules = {f.relative.split("/")[0].removesuffix(".py") for f in (code.files if code else ())}
    base = getattr(spec, "base", spec)
    for part in ("model", "data", "loop", "env"):
        section = getattr(base, part, None)
        target = getattr(section, "target", None) or getattr(section, "function", section)
        if isinstance(target, str) and ":" in target:
            modules.add(target.split(":")[0])
    return UserCode(frozenset(modules))


def check_code_reaches_workers(code: CodeBundle | None) -> None:
    """On a cluster, every module the user's code imported must travel with the job (be
    under code.paths) or be installed there: SpecError naming the first file that is
    neither."""
    if code is None:
        return
    from deeprig.spec.errors import Problem
    from deeprig.usercode.bundle import modules_outside

    outside = modules_outside(code)
    if outside:
        raise SpecError(
            [
                Problem(
                    "code.paths",
                    f"your code imports {outside[0]}, which is neither under code.paths nor "
                    "an installed package: the cluster's workers could not import it; add "
                    "its folder to code.paths",
                )
            ]
        )


def user_code_of(spec: Any) -> CodeBundle | None:
    """The bundle of the job's `code.paths` (a search's: its base's), None without any."""
    from deeprig.usercode import CodeBundle, UserCodeProblem

    paths = getattr(getattr(spec, "base", spec), "code", None)
    if paths is None or not paths.paths:
        return None
    try:
        return CodeBundle.collect(paths.paths)
    except UserCodeProblem as exc:
        from deeprig.spec.errors import Problem

        raise SpecError([Problem(exc.path, str(exc))]) from None


def _open_run(
    spec: Any, job: Job, target: TrackingTarget | None, resumed: RunRecorder | None
) -> RunRecorder | NullRecorder:
    import ray

    from deeprig.tracking.drivers import driver_tags
    from deeprig.tracking.job_runs import create_job_run  # (it records the driver too)

    if resumed is not None:
        resumed.reopen()
        resumed.set_tags(driver_tags())
        job.console.print(f"Resuming MLflow run [bold]{resumed.run_id}[/]")
        return resumed
    if target is None:
        from deeprig.tracking.null import NullRecorder

        return NullRecorder()
    recorder = create_job_run(
        spec, job.spec_text, job.spec_path, target, ray.get_runtime_context().get_job_id()
    )
    job.console.print(
        f"MLflow run [bold]{recorder.run_id}[/] in experiment [bold]{spec.experiment_name}[/]"
    )
    if recorder.waits_in:
        job.console.print(
            "[yellow]the tracking server did not answer: the job trains, its records wait in "
            "order and the run is created once the server answers (this id until then)[/]",
            soft_wrap=True,
        )
    job.console.print(f"  store: {target.uri}", soft_wrap=True, highlight=False)
    return recorder
