"""Why a job ended: one classification (`FailureClass`), carried by one picklable exception
(`JobFailure`) from wherever it was found to the run's tag, the exit code and the message.

Classification is by type, never by message: the exception and what wraps it (Ray Train's
per-rank `WorkerGroupError`, its `ControllerError`, a dead worker's health-check error,
`__cause__`) are walked, each type (and its bases) looked up by qualified name in
`_CLASS_OF_TYPE` (so this module imports neither Ray nor torch); else the deepest frame
in the user's own modules makes it `user_code`, placed at the user's file:line, and the
deepest in a module that reads the data (`_DATA_MODULES`) makes it `data`. On a
worker `classified` turns an exception into a `JobFailure` while its traceback is alive
(Ray ships tracebacks as text); on the controller and the driver `classify` reads what
arrived. The table `FAILURES` holds each class's facts: what to say, the likeliest fix,
and whether a restart can cure it (`failure.max_failures` restarts only those by default;
`failure.retry_on` changes the set). `RetryPolicy` decides a restart: the first
`failure.log_patterns` rule found in the error's text, else the class.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import Any, Literal


class FailureClass(StrEnum):
    """Why a job failed: the run's `deeprig.failure` tag."""

    NON_FINITE_LOSS = "non_finite_loss"
    OUT_OF_MEMORY = "out_of_memory"
    USER_CODE = "user_code"
    DATA = "data"
    WORKER_LOST = "worker_lost"
    INFRASTRUCTURE = "infrastructure"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class FailureFacts:
    """What deeprig knows of a class of failure."""

    headline: str  # what happened, in a few words
    fix: str  # the likeliest fix
    # A restart from the latest checkpoint can cure it: retried under failure.max_failures
    # by default, and the job's exit code says that running it again may succeed.
    restart_cures: bool


# The order is precedence: of several ranks' errors the first class here names the job's
# failure (when one rank fails, the others fail too, with collateral errors: a collective
# aborted by the dead peer is not the story).
FAILURES: dict[FailureClass, FailureFacts] = {
    FailureClass.NON_FINITE_LOSS: FailureFacts(
        "training diverged: the loss became NaN or infinite",
        "a smaller optim.lr, or optim.grad_clip_norm (e.g. 1.0); the last good checkpoint is kept",
        restart_cures=False,  # the same data and weights diverge again at the same step
    ),
    FailureClass.OUT_OF_MEMORY: FailureFacts(
        "a worker ran out of memory",
        "a smaller optim.batch_size (optim.accumulate_steps keeps the effective batch), a "
        "smaller model, or data.cache: stream",
        # The same batch at the same step needs the same memory again; a neighbour that
        # took the memory is the exception: `failure.retry_on` can add this class.
        restart_cures=False,
    ),
    FailureClass.USER_CODE: FailureFacts(
        "your code raised an exception",
        "fix your code where it raised (your frames are above)",
        restart_cures=False,  # the same code on the same data raises again
    ),
    FailureClass.DATA: FailureFacts(
        "reading the data failed",
        "check the data files the job reads (`deeprig validate` reads every header); a "
        "file changed or removed while the job ran fails it",
        restart_cures=False,
    ),
    FailureClass.WORKER_LOST: FailureFacts(
        "a training worker or its node died",
        "failure.max_failures: 1 (or more) restarts the workers from the latest checkpoint; "
        "Ray's worker logs say why the process died",
        restart_cures=True,
    ),
    FailureClass.INFRASTRUCTURE: FailureFacts(
        "Ray could not run the job's workers (start-up, scheduling or a connection failed)",
        "run it again; on a cluster, `deeprig cluster status` shows whether every node is up",
        restart_cures=True,
    ),
    FailureClass.UNKNOWN: FailureFacts(
        "the job failed",
        "the full log below has the whole traceback",
        restart_cures=False,  # nothing says a restart would help; `retry_on` can say so
    ),
}

# The classes `failure.max_failures` restarts when `failure.retry_on` is not given.
RETRIED_BY_DEFAULT = tuple(kind for kind, facts in FAILURES.items() if facts.restart_cures)

# Exception types (by module and qualified name, matched along the MRO) -> their class.
_CLASS_OF_TYPE: dict[str, FailureClass] = {
    "torch.OutOfMemoryError": FailureClass.OUT_OF_MEMORY,
    "builtins.MemoryError": FailureClass.OUT_OF_MEMORY,
    "ray.exceptions.OutOfMemoryError": FailureClass.OUT_OF_MEMORY,
    "ray.exceptions.OutOfDiskError": FailureClass.INFRASTRUCTURE,
    "deeprig.data.info.DataProblem": FailureClass.DATA,
    "ray.data.exceptions.RayDataUserCodeException": FailureClass.DATA,
    "pyarrow.lib.ArrowInvalid": FailureClass.DATA,
    "PIL.UnidentifiedImageError": FailureClass.DATA,
    "ray.exceptions.RayActorError": FailureClass.WORKER_LOST,
    "ray.exceptions.NodeDiedError": FailureClass.WORKER_LOST,
    "ray.exceptions.WorkerCrashedError": FailureClass.WORKER_LOST,
    "ray.train.v2._internal.exceptions.WorkerHealthCheckFailedError": FailureClass.WORKER_LOST,
    "ray.train.v2._internal.exceptions.WorkerHealthCheckTimeoutError": FailureClass.WORKER_LOST,
    "ray.train.PreemptionError": FailureClass.WORKER_LOST,  # (Ray names it where it exports it)
    "ray.train.v2._internal.exceptions.WorkerGroupStartupTimeoutError": (
        FailureClass.INFRASTRUCTURE
    ),
    "ray.train.v2._internal.exceptions.WorkerGroupStartupFailedError": (
        FailureClass.INFRASTRUCTURE
    ),
    "ray.train.v2._internal.exceptions.InsufficientClusterResourcesError": (
        FailureClass.INFRASTRUCTURE
    ),
    "ray.train.v2._internal.exceptions.CollectiveTimeoutError": FailureClass.INFRASTRUCTURE,
    "ray.exceptions.RaySystemError": FailureClass.INFRASTRUCTURE,
    "ray.exceptions.ObjectLostError": FailureClass.INFRASTRUCTURE,
    "torch.distributed.DistNetworkError": FailureClass.INFRASTRUCTURE,
    "builtins.ConnectionError": FailureClass.INFRASTRUCTURE,
    "builtins.TimeoutError": FailureClass.INFRASTRUCTURE,
}

# Where Ray's wrappers keep what they wrap: Ray Train's of a worker's exception (`_base_exc`,
# with no public name) and of a dead worker's error; Ray's of a task's or actor's error as
# its caller gets it (`RayTaskError.cause`: a search's trial).
_WRAPPED_AS = ("_base_exc", "health_check_failure", "cause")

# Modules that read the data: an exception raised while one of them ran (a ragged column
# met in a batch, a file gone) is the data's, unless the user's code ran deeper.
_DATA_MODULES = ("ray.data", "pyarrow", "PIL", "deeprig.data")

# A short traceback (an unknown failure's) keeps this many of its last lines.
SHORT_TRACEBACK_LINES = 12


class JobFailure(Exception):
    """A classified failure: its class, what happened, where (epoch and step, or the
    user's file:line), and the user's own frames when it was their code. Picklable: it
    crosses from a Ray Train worker to the controller and the driver."""

    def __init__(
        self,
        kind: FailureClass,
        detail: str = "",
        where: str = "",
        frames: str = "",
        trace: str = "",
    ) -> None:
        self.kind = FailureClass(kind)
        self.detail = detail  # the error itself, e.g. "ValueError: labels out of range"
        self.where = where
        self.frames = frames  # the user's frames (user_code) or a short traceback (unknown)
        # The whole traceback where it was classified (a worker's travels with it): for the
        # job's log, never the terminal.
        self.trace = trace
        super().__init__(self.describe())

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle rebuilds an exception from its args (its message): rebuild it from its parts.
        return (JobFailure, (self.kind, self.detail, self.where, self.frames, self.trace))

    @property
    def facts(self) -> FailureFacts:
        return FAILURES[self.kind]

    def describe(self) -> str:
        facts = FAILURES[self.kind]
        text = facts.headline + (f": {self.detail}" if self.detail else "")
        text += f" (at {self.where})" if self.where else ""
        return f"{text}. The likeliest fix: {facts.fix}."

    def block(self, log: str | None = None) -> list[str]:
        """What a failed job prints: one short block, no deeprig or Ray frames."""
        facts = FAILURES[self.kind]
        lines = [f"job failed ({self.kind}): {facts.headline}"]
        if self.detail:
            lines.append(f"  {self.detail}")
        if self.where:
            lines.append(f"  where: {self.where}")
        if self.frames:
            title = "your code" if self.kind == FailureClass.USER_CODE else "traceback"
            lines.append(f"  {title} (most recent call last):")
            lines += [f"  {line}" for line in self.frames.splitlines()]
        lines.append(f"  fix: {facts.fix}")
        if log:
            lines.append(f"  full log: {log} (or run again with --verbose)")
        return lines


@dataclass(frozen=True)
class UserCode:
    """Which frames are the user's: the top-level modules of `code.paths` and of the spec's
    targets. Light and picklable (it travels to every worker)."""

    modules: frozenset[str] = field(default_factory=frozenset)

    def owns(self, module: str | None) -> bool:
        return bool(module) and str(module).split(".")[0] in self.modules


def classify(exc: BaseException, user: UserCode | None = None) -> JobFailure:
    """The failure `exc` is: the most telling of its ranks' errors when it is Ray Train's,
    found by type along what wraps it, else user code where one of the user's frames
    raised it, else unknown (with a short traceback)."""
    return classify_ranks([exc], user)


def classify_ranks(errors: Iterable[BaseException], user: UserCode | None = None) -> JobFailure:
    """The job's failure among several ranks' (or trials') errors: the first class in
    `FAILURES`."""
    order = list(FAILURES)
    found = [_classify_one(e, user or UserCode()) for error in errors for e in _rank_errors(error)]
    return min(found, key=lambda failure: order.index(failure.kind))


def classified(function: Callable[[dict[str, Any]], Any], user: UserCode) -> Callable[..., Any]:
    """`function` (a worker's entry point, called with its config) raising a `JobFailure`
    instead of what it raised, classified while the traceback is alive: only here are the
    user's frames known."""
    return _Classified(function, user)


@dataclass(frozen=True)
class _Classified:
    function: Callable[[dict[str, Any]], Any]
    user: UserCode

    @property
    def __name__(self) -> str:  # (Ray names the worker's thread after its function)
        return getattr(self.function, "__name__", "train_loop")

    def __call__(self, config: dict[str, Any]) -> Any:  # (Ray Train passes the config)
        try:
            return self.function(config)
        except JobFailure:
            raise
        except Exception as exc:
            failure = classify(exc, self.user)
            if failure.kind == FailureClass.UNKNOWN:
                raise  # its own type, for whoever reads Ray's worker logs
            raise failure from exc


def retry_classes(retry_on: Iterable[str] | None) -> frozenset[FailureClass]:
    """The classes a restart is spent on: `failure.retry_on`, or the default."""
    if retry_on is None:
        return frozenset(RETRIED_BY_DEFAULT)
    return frozenset(FailureClass(name) for name in retry_on)


@dataclass(frozen=True)
class LogRule:
    """`failure.log_patterns` entry: a regular expression searched for in a worker's error
    text (its message and traceback), and whether a match is retried or ends the job."""

    pattern: str
    action: Literal["retry", "stop"]


@dataclass(frozen=True)
class RetryPolicy:
    """Whether a restart is spent on a failure: the first `log_patterns` rule whose pattern
    is in the error text decides (what the classes miss: a driver-level CUDA error, a flaky
    mount's message); else its class being in `retry_on`. Picklable: it runs on the Ray
    Train controller."""

    retry_on: frozenset[FailureClass]
    log_patterns: tuple[LogRule, ...] = ()

    def ends_the_job(
        self, failure: JobFailure, errors: Iterable[BaseException] = ()
    ) -> JobFailure | None:
        """None when a restart is to be spent on `failure` (classified from `errors`), else
        the failure that ends the job, naming the rule that stopped it if one did."""
        text = error_text(failure, errors)
        for index, rule in enumerate(self.log_patterns):
            if re.search(rule.pattern, text, re.MULTILINE):
                if rule.action == "retry":
                    return None
                stopped_by = f"failure.log_patterns[{index}] ({rule.pattern!r}) says stop"
                detail = f"{failure.detail}; {stopped_by}" if failure.detail else stopped_by
                return JobFailure(failure.kind, detail, failure.where, failure.frames, text)
        return None if failure.kind in self.retry_on else failure


def error_text(failure: JobFailure, errors: Iterable[BaseException] = ()) -> str:
    """All a worker said of its failure: each error along what wraps it (Ray's text of a
    worker's traceback included) and the classified failure's own traceback."""
    parts = [str(e) for error in errors for e in _chain(error)]
    parts += [failure.detail, failure.trace]
    return "\n".join(part for part in parts if part)


# What a collective (gloo, NCCL) raises on the ranks left when another rank's process or
# node dies: a plain RuntimeError, told apart only by its text. The dead rank's own error
# may reach the controller later than these: they are that rank's loss, not a bug.
PEER_LOST = ("Connection reset by peer", "Connection closed by peer")


def _rank_errors(exc: BaseException) -> list[BaseException]:
    """Ray Train's failure, wherever it is along what `exc` wraps, as its ranks' errors (a
    `WorkerGroupError`'s `worker_failures`, a `ControllerError`'s `controller_failure`),
    else `exc` itself (a `JobFailure` is classified already: what it wraps is not read)."""
    if isinstance(exc, JobFailure):
        return [exc]
    for error in _chain(exc):
        ranks = getattr(error, "worker_failures", None)
        if isinstance(ranks, dict) and ranks:
            return [e for failure in ranks.values() for e in _rank_errors(failure)]
        controller = getattr(error, "controller_failure", None)
        if isinstance(controller, BaseException):
            return _rank_errors(controller)
    return [exc]


def _classify_one(exc: BaseException, user: UserCode) -> JobFailure:
    chain = list(_chain(exc))
    for error in chain:
        if isinstance(error, JobFailure):
            return error
    trace = _traceback_text(chain)
    for error in chain:
        kind = _class_of_type(type(error))
        if kind is not None:
            return JobFailure(kind, _detail(error), trace=trace)
    for error in chain:
        if isinstance(error, RuntimeError) and any(p in str(error) for p in PEER_LOST):
            return JobFailure(FailureClass.WORKER_LOST, _detail(error), trace=trace)
    for error in chain:
        frames = _frames(error.__traceback__)
        # The deepest frame of the user's or of the data's reading decides: the user's
        # collate function under Ray Data is theirs, Ray Data under their loop is the data.
        owner = next((m for m, _ in reversed(frames) if user.owns(m) or _reads_data(m)), None)
        if owner is None:
            continue
        if _reads_data(owner) and not user.owns(owner):
            return JobFailure(FailureClass.DATA, _detail(error), trace=trace)
        mine = [summary for module, summary in frames if user.owns(module)]
        return JobFailure(
            FailureClass.USER_CODE,
            _detail(error),
            f"{mine[-1].filename}:{mine[-1].lineno}, in {mine[-1].name}",
            "".join(traceback.format_list(mine)).rstrip(),
            trace,
        )
    unwrapped = next((e for e in chain if not _is_wrapper(e)), exc)
    short = "\n".join(trace.splitlines()[-SHORT_TRACEBACK_LINES:])
    return JobFailure(FailureClass.UNKNOWN, _detail(unwrapped), frames=short, trace=trace)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what it wraps, then what that wraps."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = _wrapped(current)


def _wrapped(exc: BaseException) -> BaseException | None:
    """What `exc` wraps: Ray Train's user-exception and health-check wrappers, the
    explicit cause, else the exception being handled when it was raised."""
    for name in _WRAPPED_AS:
        inner = getattr(exc, name, None)
        if isinstance(inner, BaseException):
            return inner
    if exc.__cause__ is not None or exc.__suppress_context__:
        return exc.__cause__
    return exc.__context__


def _reads_data(module: str | None) -> bool:
    return any(module == m or str(module).startswith(f"{m}.") for m in _DATA_MODULES)


def _is_wrapper(exc: BaseException) -> bool:
    return any(isinstance(getattr(exc, n, None), BaseException) for n in _WRAPPED_AS)


def _class_of_type(kind: type) -> FailureClass | None:
    for base in kind.__mro__:
        name = f"{base.__module__}.{base.__qualname__}"
        if name in _CLASS_OF_TYPE:
            return _CLASS_OF_TYPE[name]
    return None


def _frames(tb: TracebackType | None) -> list[tuple[str | None, traceback.FrameSummary]]:
    """A traceback's frames: (the frame's module, its summary with the source line)."""
    found = []
    for frame, lineno in traceback.walk_tb(tb):
        module = frame.f_globals.get("__name__")
        code = frame.f_code
        summary = traceback.FrameSummary(code.co_filename, lineno, code.co_name)
        found.append((module, summary))
    return found


def _detail(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _traceback_text(chain: list[BaseException]) -> str:
    """The innermost traceback there is: a live one, or the text Ray made of a worker's."""
    text = str(chain[-1]).rstrip()
    for error in reversed(chain):
        if error.__traceback__ is not None:
            text = "".join(traceback.format_exception(error)).rstrip()
            break
        if _is_wrapper(error):  # (Ray's text of a worker's traceback)
            text = str(error).rstrip()
            break
    return text
