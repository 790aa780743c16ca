"""No pointless retries: a restart under `failure.max_failures` is spent only on a failure
the job's `RetryPolicy` retries: one a `failure.log_patterns` rule says to retry, else one
whose class is in `failure.retry_on` (by default those a restart can cure).

Ray Train 2.60 lets no one choose its failure policy (`create_failure_policy` always
builds the default one, which retries every worker error up to `max_failures`), but it
calls each `UserCallback`'s `after_exception` with the ranks' errors when it polls the
workers, before the policy decides; an exception raised there that is not one of Ray
Train's own becomes a `ControllerError`, which the default policy never retries. So this
callback classifies the ranks' errors and raises the classified failure when it is not to
be retried: the job ends after one worker-group start, and the driver finds the failure
inside the `ControllerError`.
"""

from __future__ import annotations

from typing import Any

from ray.train import UserCallback

from deeprig.failures import RetryPolicy, classify_ranks


class EndUnlessRetried(UserCallback):
    """On the Ray Train controller: end the run at once on a failure not worth a restart."""

    def __init__(self, policy: RetryPolicy):
        self.policy = policy

    def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]) -> None:
        failure = classify_ranks(worker_exceptions.values())
        ending = self.policy.ends_the_job(failure, worker_exceptions.values())
        if ending is not None:
            raise ending
