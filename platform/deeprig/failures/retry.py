"""Whether a restart is spent on a failure (`RetryPolicy`, run on the Ray Train controller):
the first `failure.log_patterns` rule found in the error's text, else its class being in
`failure.retry_on` (by default the classes a restart can cure)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from deeprig.failures.classes import RETRIED_BY_DEFAULT, FailureClass, JobFailure
from deeprig.failures.classification import error_chain


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
    parts = [str(e) for error in errors for e in error_chain(error)]
    parts += [failure.detail, failure.trace]
    return "\n".join(part for part in parts if part)
