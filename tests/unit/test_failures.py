"""Why a job ended (deeprig.failures): classification by type through Ray Train's
wrappers, the user's own frames, what the controller retries, and the block a failed job
prints. Ray's and torch's real exception types; no Ray is started."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from deeprig.failures import (
    FAILURES,
    RETRIED_BY_DEFAULT,
    FailureClass,
    JobFailure,
    RetryPolicy,
    UserCode,
    classified,
    classify,
    retry_classes,
)
from deeprig.failures.classification import CLASS_OF_TYPE
from deeprig.training.guards import NonFiniteLoss
from ray.exceptions import ActorDiedError
from ray.train.v2._internal.exceptions import (
    UserExceptionWithTraceback,
    WorkerHealthCheckFailedError,
)
from ray.train.v2.api.exceptions import ControllerError, WorkerGroupError

USER = UserCode(frozenset({"userloop"}))


def _raised_on_worker(function, *args) -> JobFailure | BaseException:
    """What a worker's entry point raises, run through `classified`."""
    with pytest.raises(Exception) as raised:
        classified(function, USER)(*args)
    return raised.value


def _as_ray_ships(*rank_errors: BaseException) -> WorkerGroupError:
    """The ranks' errors as the driver gets them: pickled, each wrapped with its traceback's
    text, in one WorkerGroupError."""
    wrapped = {
        rank: UserExceptionWithTraceback(pickle.loads(pickle.dumps(e)), f"Traceback ...\n{e}")
        for rank, e in enumerate(rank_errors)
    }
    return WorkerGroupError("worker errors", wrapped)


def _died() -> WorkerHealthCheckFailedError:
    return WorkerHealthCheckFailedError("worker 1 died", ActorDiedError())


def test_every_class_has_its_facts_and_the_default_retries_are_what_a_restart_cures():
    assert list(FAILURES) == list(FailureClass)
    assert set(RETRIED_BY_DEFAULT) == {FailureClass.WORKER_LOST, FailureClass.INFRASTRUCTURE}
    assert retry_classes(None) == frozenset(RETRIED_BY_DEFAULT)
    assert retry_classes(["user_code"]) == {FailureClass.USER_CODE}


def test_an_error_in_the_users_code_is_user_code_at_their_file_and_line(user_module):
    failure = _raised_on_worker(user_module.train, {})
    assert isinstance(failure, JobFailure) and failure.kind == FailureClass.USER_CODE
    assert failure.detail == "ValueError: labels out of range at epoch 2"
    assert failure.where == f"{user_module.__file__}:8, in check_labels"
    # Only the user's frames: not this test's, not deeprig's.
    assert failure.frames.count("File ") == 2
    assert 'userloop.py", line 3, in train' in failure.frames
    assert "deeprig" not in failure.frames and "test_failures" not in failure.frames


def test_a_classified_failure_crosses_rays_pickling_and_wrappers_intact(user_module):
    on_worker = _raised_on_worker(user_module.train, {})
    failure = classify(_as_ray_ships(on_worker, on_worker))
    assert (failure.kind, failure.where) == (on_worker.kind, on_worker.where)
    assert failure.frames == on_worker.frames
    diverged = classify(ControllerError(NonFiniteLoss(0, 3)))
    assert isinstance(diverged, NonFiniteLoss) and diverged.where == "epoch 1, step 4"


def test_classification_is_by_type_never_by_message():
    assert classify(RuntimeError("NonFiniteLoss: out of memory")).kind == FailureClass.UNKNOWN
    assert classify(torch.OutOfMemoryError("CUDA out of memory")).kind == (
        FailureClass.OUT_OF_MEMORY
    )
    assert classify(_as_ray_ships(MemoryError())).kind == FailureClass.OUT_OF_MEMORY
    assert classify(ConnectionResetError()).kind == FailureClass.INFRASTRUCTURE  # a subclass
    try:
        try:
            raise ActorDiedError()
        except ActorDiedError as exc:
            raise RuntimeError("wrapped") from exc
    except RuntimeError as outer:
        assert classify(outer).kind == FailureClass.WORKER_LOST  # found along the cause


def test_of_several_ranks_errors_the_telling_one_names_the_failure(user_module):
    # One rank's bug leaves the other with a collateral error (a collective its peer left).
    bug = _raised_on_worker(user_module.train, {})
    assert classify(_as_ray_ships(RuntimeError("gloo: peer closed"), bug)).kind == (
        FailureClass.USER_CODE
    )
    lost = WorkerGroupError("errors", {0: RuntimeError("gloo: peer closed"), 1: _died()})
    assert classify(lost).kind == FailureClass.WORKER_LOST


def test_an_unknown_failure_keeps_a_short_traceback():
    def deep(n: int) -> None:
        if n == 0:
            raise KeyError("nowhere")
        deep(n - 1)

    with pytest.raises(KeyError) as raised:
        classified(deep, USER)(20)  # unknown: re-raised as it was, for Ray's worker logs
    failure = classify(raised.value)
    assert failure.kind == FailureClass.UNKNOWN and failure.detail == "KeyError: 'nowhere'"
    lines = failure.frames.splitlines()
    assert len(lines) == 12 and lines[-1] == "KeyError: 'nowhere'"
    assert len(failure.trace.splitlines()) > len(lines)  # the whole of it, for the log
    shipped = classify(_as_ray_ships(KeyError("nowhere")))
    assert shipped.detail == "KeyError: 'nowhere'" and "Traceback" in shipped.frames


def test_the_controller_ends_the_run_unless_the_class_is_retried(user_module):
    from deeprig.runners.retries import EndUnlessRetried

    bug = _raised_on_worker(user_module.train, {})
    shipped = _as_ray_ships(bug).worker_failures
    with pytest.raises(JobFailure) as ended:  # (the controller wraps it in ControllerError)
        EndUnlessRetried(RetryPolicy(retry_classes(None))).after_exception(None, shipped)
    assert ended.value.kind == FailureClass.USER_CODE
    EndUnlessRetried(RetryPolicy(retry_classes(["user_code"]))).after_exception(None, shipped)
    EndUnlessRetried(RetryPolicy(retry_classes(None))).after_exception(None, {1: _died()})


def test_a_diverged_jobs_block_is_short_and_says_where_and_the_fix():
    lines = NonFiniteLoss(0, 3).block("/home/u/.deeprig/logs/run-1.log")
    assert len(lines) == 4
    text = "\n".join(lines)
    assert lines[0].startswith("job failed (non_finite_loss): training diverged")
    assert "where: epoch 1, step 4" in text and "optim.lr" in text
    assert "optim.grad_clip_norm" in text and "/home/u/.deeprig/logs/run-1.log" in text


def test_a_user_code_block_shows_the_users_frames_only(user_module):
    failure = classify(_as_ray_ships(_raised_on_worker(user_module.train, {})))
    lines = failure.block("run.log")
    assert len(lines) <= 10
    assert lines[1] == "  ValueError: labels out of range at epoch 2"
    assert lines[2].endswith("userloop.py:8, in check_labels")
    frames = [line for line in lines if line.strip().startswith("File ")]
    assert len(frames) == 2 and all("userloop.py" in line for line in frames)


def test_the_cli_prints_the_block_writes_the_whole_traceback_and_exits_by_class(
    user_module, tmp_path: Path, capsys
):
    from deeprig.cli.common import ExitCode, report_failure

    log = tmp_path / "logs" / "run.log"
    bug = _as_ray_ships(_raised_on_worker(user_module.train, {}))
    assert report_failure(bug, log) == ExitCode.FAILED
    printed = capsys.readouterr().err.splitlines()
    assert printed[0] == "job failed (user_code): your code raised an exception"
    assert printed[-1] == f"  full log: {log} (or run again with --verbose)"
    whole = log.read_text()
    assert "WorkerGroupError" in whole  # the whole of it, there, and the worker's traceback
    on_worker = whole.split("Where it was raised:")[1]  # every frame: deeprig's too
    assert "deeprig/failures/classification.py" in on_worker and "userloop.py" in on_worker
    assert report_failure(WorkerGroupError("x", {0: _died()}), log) == (ExitCode.RETRY_MAY_SUCCEED)


def test_retry_on_names_failure_classes_or_the_spec_is_refused():
    from deeprig.spec.errors import SpecError
    from deeprig.spec.loader import load_spec_text

    from tests.conftest import JOBS

    text = (JOBS / "quickstart.yaml").read_text()
    spec = load_spec_text(text, ["failure={max_failures: 2, retry_on: [user_code, worker_lost]}"])
    assert spec.failure.retry_on == [FailureClass.USER_CODE, FailureClass.WORKER_LOST]
    with pytest.raises(SpecError) as refused:
        load_spec_text(text, ["failure.retry_on=[worker_los]"])
    (problem,) = refused.value.problems
    assert problem.path == "failure.retry_on.0"
    assert all(name in problem.message for name in FailureClass)


def test_a_search_whose_trials_all_failed_fails_as_its_most_telling_trial(user_module):
    from deeprig.runners.tune.record import _all_trials_failed
    from ray.exceptions import RayTaskError

    def trial_error(cause: BaseException) -> RayTaskError:  # (as Tune hands a trial's over)
        return RayTaskError("trial", "Traceback ...", cause, "trial", 1, "127.0.0.1")

    bug = _as_ray_ships(_raised_on_worker(user_module.train, {}))
    diverged = ControllerError(NonFiniteLoss(1, 7))
    failure = _all_trials_failed([trial_error(bug), trial_error(diverged)])
    assert failure.kind == FailureClass.NON_FINITE_LOSS and failure.where == "epoch 2, step 8"
    assert failure.detail.startswith("all 2 trials failed")
    assert classify(trial_error(bug)).kind == FailureClass.USER_CODE


def test_a_failure_raised_from_the_error_it_was_found_in_classifies_as_itself():
    # run_job raises the failure it found inside Ray's ControllerError *from* that error:
    # the ControllerError holds the failure, which now holds it as its cause.
    found = NonFiniteLoss(0, 3)
    wrapper = ControllerError(found)
    found.__cause__ = wrapper
    assert classify(found) is found and classify(wrapper) is found


def test_an_error_raised_while_the_data_is_read_is_the_datas_unless_the_user_code_ran_deeper(
    user_module,
):
    import types

    # A reader under Ray Data's package (its frames carry the module's name, as Ray's do).
    reader = types.ModuleType("ray.data._reader")
    source = "def batches(rows, collate):\n    return [collate(r) for r in rows]\n"
    exec(compile(source, "reader.py", "exec"), reader.__dict__)

    def ragged(row):  # (numpy's error on a ragged row: the frame is this test's, not the user's)
        raise ValueError("setting an array element with a sequence")

    def users_collate(row):
        return user_module.train(row)

    raised = _raised_on_worker(lambda rows: reader.batches(rows, ragged), [1])
    assert raised.kind == FailureClass.DATA
    assert raised.detail == "ValueError: setting an array element with a sequence"
    deeper = _raised_on_worker(lambda rows: reader.batches(rows, users_collate), [1])
    assert deeper.kind == FailureClass.USER_CODE and "check_labels" in deeper.where


@pytest.mark.parametrize("name", sorted(CLASS_OF_TYPE))
def test_every_type_the_table_names_is_a_real_class_by_that_name(name):
    import importlib

    module, _, attr = name.rpartition(".")
    kind = getattr(importlib.import_module(module), attr)
    assert f"{kind.__module__}.{kind.__qualname__}" == name
