"""`failure.log_patterns` (deeprig.failures.RetryPolicy): the first rule whose pattern is in
a worker's error text decides whether a restart is spent, before `failure.retry_on`; the
controller callback acts on it. Ray's real wrapper types; no Ray is started."""

from __future__ import annotations

import pickle

import pytest
from deeprig.failures import (
    FailureClass,
    JobFailure,
    LogRule,
    RetryPolicy,
    classify_ranks,
    retry_classes,
)
from deeprig.runners.retries import EndUnlessRetried
from ray.train.v2._internal.exceptions import UserExceptionWithTraceback

CUDA = "CUDA error: an illegal memory access was encountered"


def _shipped(error: BaseException, trace: str = "") -> dict[int, Exception]:
    """A rank's error as the controller gets it: pickled, wrapped with its traceback text."""
    text = f"Traceback (most recent call last):\n  File 'loop.py'\n{trace}{error}"
    return {0: UserExceptionWithTraceback(pickle.loads(pickle.dumps(error)), text)}


def test_a_retry_rule_retries_what_its_class_would_end():
    ranks = _shipped(RuntimeError(CUDA))
    failure = classify_ranks(ranks.values())
    assert failure.kind == FailureClass.UNKNOWN  # not retried by default
    by_class = RetryPolicy(retry_classes(None))
    assert by_class.ends_the_job(failure, ranks.values()) is failure
    rules = (LogRule(r"CUDA error: an illegal", "retry"),)
    assert RetryPolicy(retry_classes(None), rules).ends_the_job(failure, ranks.values()) is None


def test_a_stop_rule_ends_what_its_class_would_retry_and_says_which_rule():
    ranks = _shipped(ConnectionError("NFS mount /data stale file handle"))
    failure = classify_ranks(ranks.values())
    assert failure.kind == FailureClass.INFRASTRUCTURE  # retried by default
    assert RetryPolicy(retry_classes(None)).ends_the_job(failure, ranks.values()) is None
    rules = (LogRule("no match here", "retry"), LogRule(r"stale file\s+handle", "stop"))
    ending = RetryPolicy(retry_classes(None), rules).ends_the_job(failure, ranks.values())
    assert ending is not None and ending.kind == FailureClass.INFRASTRUCTURE
    assert "failure.log_patterns[1]" in ending.detail and "says stop" in ending.detail
    assert "NFS mount" in ending.detail  # what happened stays first


def test_the_first_matching_rule_wins_and_the_traceback_text_is_searched():
    ranks = _shipped(RuntimeError("step failed"), trace="  torch.cuda.synchronize()\n")
    failure = classify_ranks(ranks.values())
    rules = (LogRule(r"^\s+torch\.cuda\.synchronize", "stop"), LogRule("step failed", "retry"))
    assert RetryPolicy(frozenset(), rules).ends_the_job(failure, ranks.values()) is not None
    swapped = RetryPolicy(frozenset(), rules[::-1])
    assert swapped.ends_the_job(failure, ranks.values()) is None


def test_the_controller_callback_follows_the_rules():
    ranks = _shipped(RuntimeError(CUDA))
    retried = EndUnlessRetried(RetryPolicy(retry_classes(None), (LogRule("CUDA", "retry"),)))
    retried.after_exception(None, ranks)  # nothing raised: Ray Train restarts the workers
    with pytest.raises(JobFailure) as ended:
        EndUnlessRetried(RetryPolicy(retry_classes(None))).after_exception(None, ranks)
    assert ended.value.kind == FailureClass.UNKNOWN


def test_a_policy_travels_to_the_controller():
    policy = RetryPolicy(retry_classes(["user_code"]), (LogRule("CUDA", "retry"),))
    assert pickle.loads(pickle.dumps(policy)) == policy


def test_the_spec_gives_the_rules_in_order_and_refuses_a_pattern_that_is_no_regex():
    from deeprig.spec.errors import SpecError
    from deeprig.spec.loader import load_spec_text

    from tests.conftest import JOBS

    text = (JOBS / "quickstart.yaml").read_text()
    rules = "[{pattern: 'CUDA error', action: retry}, {pattern: 'disk quota', action: stop}]"
    spec = load_spec_text(text, ["failure.max_failures=2", f"failure.log_patterns={rules}"])
    policy = spec.failure.retry_policy()
    assert policy.log_patterns == (LogRule("CUDA error", "retry"), LogRule("disk quota", "stop"))
    assert policy.retry_on == retry_classes(None)
    with pytest.raises(SpecError) as refused:
        load_spec_text(text, ["failure.log_patterns=[{pattern: 'CUDA error (700', action: retry}]"])
    (problem,) = refused.value.problems
    assert problem.path == "failure.log_patterns.0.pattern"
    assert "not a regular expression" in problem.message and "backslash" in problem.message
    with pytest.raises(SpecError) as refused:
        load_spec_text(text, ["failure.log_patterns=[{pattern: x, action: retry_twice}]"])
    (problem,) = refused.value.problems
    assert problem.path == "failure.log_patterns.0.action" and "'stop'" in problem.message
