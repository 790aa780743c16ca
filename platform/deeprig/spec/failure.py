"""`failure:` of a train spec: the restarts a job may spend, on which failure classes or
error texts, and how long its workers may wait for room."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from deeprig.failures import RETRIED_BY_DEFAULT, FailureClass, LogRule, RetryPolicy, retry_classes
from deeprig.spec.common import StrictModel


class LogPatternSpec(StrictModel):
    pattern: str = Field(
        description=(
            "A regular expression (Python's `re`) searched for in a worker's error text: its "
            "message and traceback, e.g. `CUDA error: an illegal memory access`."
        ),
    )
    action: Literal["retry", "stop"] = Field(
        description=(
            "retry: a restart is spent on the failure (within `max_failures`) whatever its "
            "class; stop: the job ends at once."
        ),
    )

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(
                f"not a regular expression ({exc}): a backslash before a character meant "
                r"literally, e.g. 'CUDA error \(700\)'"
            ) from None
        return pattern


class FailureSpec(StrictModel):
    max_failures: int = Field(
        default=0,
        ge=-1,
        description=(
            "Worker-group restarts from the latest checkpoint (-1: unlimited), spent only on "
            "failures of a class in `retry_on`."
        ),
    )
    retry_on: list[FailureClass] | None = Field(
        default=None,
        description=(
            "The failure classes a restart is spent on (the run's `deeprig.failure` tag). "
            f"Omitted: {', '.join(RETRIED_BY_DEFAULT)}, what a restart can cure; any other "
            "failure (e.g. user_code, non_finite_loss) ends the job at once."
        ),
    )
    wait_for_resources_s: float = Field(
        default=300.0,
        ge=0.0,
        description=(
            "How long the workers may wait for room (a node lost, none joined; an elastic "
            "job below `min`) before the job fails as worker_lost, naming the lost nodes and "
            "what it lacks. A fixed-size job learns it at each worker-group start attempt "
            "(every 60 s, Ray Train's start timeout)."
        ),
    )
    log_patterns: list[LogPatternSpec] = Field(
        default_factory=list,
        description=(
            "Rules on a failed worker's error text, tried in order before `retry_on`: the "
            "first whose `pattern` is found decides (`retry` or `stop`). For what the failure "
            "classes miss, e.g. a driver-level CUDA error worth a restart."
        ),
    )

    def retry_policy(self) -> RetryPolicy:
        """What the Ray Train controller's callback decides a restart by."""
        rules = tuple(LogRule(rule.pattern, rule.action) for rule in self.log_patterns)
        return RetryPolicy(retry_classes(self.retry_on), rules)
