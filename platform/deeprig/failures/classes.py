"""The classes of failure (`FailureClass`, the run's `deeprig.failure` tag), what deeprig
knows of each (`FAILURES`: what to say, the likeliest fix, whether a restart can cure it),
and `JobFailure`, the picklable exception that carries a class from a Ray Train worker to
the controller and the driver, and prints as one short block."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


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
