"""A failure classified by type, never by message: the exception and what wraps it (Ray
Train's per-rank `WorkerGroupError`, its `ControllerError`, a dead worker's health-check
error, `__cause__`) are walked, each type (and its bases) looked up by qualified name in
`CLASS_OF_TYPE` (so this module imports neither Ray nor torch); else the deepest frame in
the user's own modules makes it `user_code`, placed at the user's file:line, and the
deepest in a module that reads the data (`_DATA_MODULES`) makes it `data`. On a worker
`classified` turns an exception into a `JobFailure` while its traceback is alive (Ray
ships tracebacks as text); on the controller and the driver `classify` reads what
arrived."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from deeprig.failures.classes import FAILURES, FailureClass, JobFailure

# Exception types (by module and qualified name, matched along the MRO) -> their class.
CLASS_OF_TYPE: dict[str, FailureClass] = {
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
    for error in error_chain(exc):
        ranks = getattr(error, "worker_failures", None)
        if isinstance(ranks, dict) and ranks:
            return [e for failure in ranks.values() for e in _rank_errors(failure)]
        controller = getattr(error, "controller_failure", None)
        if isinstance(controller, BaseException):
            return _rank_errors(controller)
    return [exc]


def _classify_one(exc: BaseException, user: UserCode) -> JobFailure:
    chain = list(error_chain(exc))
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


def error_chain(exc: BaseException) -> Iterator[BaseException]:
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
        if name in CLASS_OF_TYPE:
            return CLASS_OF_TYPE[name]
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
