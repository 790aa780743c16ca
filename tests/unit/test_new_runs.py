"""A job whose tracking server does not answer when it starts (tracking/new_runs.py): its
run is created once the server answers, every record — the driver's and another
process's — reaches that run in order, a creation delivered twice is one run, and the
first report of a new run needs no answer from the server."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from deeprig.tracking import new_runs
from deeprig.tracking.runs import RunRecorder
from deeprig.tracking.sink import MlflowMetricsSink
from deeprig.tracking.spool import spooled_runs
from deeprig.tracking.store import TrackingTarget
from deeprig.tracking.tags import Tag

from tests.conftest import free_port


@pytest.fixture
def refused(monkeypatch, tmp_path) -> TrackingTarget:
    """A tracking URI nothing listens on, asked without MLflow's retries; the spool under
    tmp_path, tried again every 0.05 s; this process's memory of the runs it created left
    as found."""
    monkeypatch.setenv("DEEPRIG_HOME", str(tmp_path))
    for name, value in {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("deeprig.tracking.outbox.RETRY_EVERY_S", 0.05)
    for name in ("_PROVISIONAL", "_CREATED_HERE", "_STORED"):
        monkeypatch.setattr(new_runs, name, type(getattr(new_runs, name))())
    return TrackingTarget(f"http://127.0.0.1:{free_port()}", None)


def created_while_refused(target: TrackingTarget, server) -> RunRecorder:
    spec = {"name": "job", "kind": "train"}
    recorder = RunRecorder.create(target, "outage", spec, "x", Path.cwd())
    recorder.client = server  # (from here on, the server the test takes down and back)
    return recorder


def test_a_run_made_while_its_server_refuses_is_created_once_it_answers_with_every_record(
    refused, flaky_server
):
    flaky_server.down = True
    recorder = created_while_refused(refused, flaky_server)
    assert recorder.waits_in == "outage" and recorder.created_as() is None
    recorder.log_metrics({"best_val_accuracy": 0.9})
    recorder.set_tags({Tag.KEY_METRIC: "best_val_accuracy"})
    recorder.finish("FINISHED")  # (returns: the server is away)
    assert not flaky_server.runs and spooled_runs() == {recorder.run_id: 6}
    flaky_server.down = False
    assert recorder.outbox.wait(timeout_s=10, until_down=False)
    [(stored, tags)] = flaky_server.runs.items()
    assert tags[Tag.PROVISIONAL_RUN_ID] == recorder.run_id != stored
    assert recorder.created_as() == stored and flaky_server.written_to == {stored}
    assert flaky_server.params == {"name": "job", "kind": "train"}
    assert flaky_server.artifacts == {"spec/job.yaml": b"x"}
    assert flaky_server.points["best_val_accuracy"][0][:2] == (0, 0.9)
    assert flaky_server.status == "FINISHED" and spooled_runs() == {}


def test_another_processs_records_wait_for_the_run_and_reach_it_in_order(refused, flaky_server):
    flaky_server.down = True
    recorder = created_while_refused(refused, flaky_server)
    controller = pickle.loads(pickle.dumps(recorder.metrics_sink()))  # (as Ray ships it)
    assert controller.waits_in == "outage" and controller.new_run
    new_runs._STORED.clear()  # (another process has not seen the run made)
    controller._client = flaky_server
    assert controller.newest_step("epoch") == -1  # (a new run: no read of the server)
    for step in range(3):
        controller.log({"epoch": step + 1.0}, step=step, timestamp=1.0 + step)
    controller.flush()  # (returns: the server is away)
    with recorder.outbox._delivering:  # (the driver's outbox held: the run is not made)
        flaky_server.down = False
        controller.outbox.wait(timeout_s=0.5, until_down=False)
        assert controller.outbox.pending() == 3 and not flaky_server.points
    assert recorder.outbox.wait(timeout_s=10, until_down=False)
    assert controller.outbox.wait(timeout_s=10, until_down=False)
    [stored] = flaky_server.runs
    assert flaky_server.written_to == {stored}
    assert [step for step, _, _ in flaky_server.points["epoch"]] == [0, 1, 2]


def test_a_creation_whose_answer_was_lost_is_one_run(refused, flaky_server):
    flaky_server.down = True
    recorder = created_while_refused(refused, flaky_server)
    flaky_server.down = False
    flaky_server.drop_answers = 1  # (the run is made, its answer lost: delivered again)
    assert recorder.outbox.wait(timeout_s=10, until_down=False)
    assert len(flaky_server.runs) == 1 and flaky_server.params == {"name": "job", "kind": "train"}


def test_the_first_report_of_a_new_run_with_its_server_away_is_kept_not_raised(
    refused, flaky_server
):
    from deeprig.tracking.report_logger import EpochMetricsLogger

    flaky_server.down = True
    recorder = created_while_refused(refused, flaky_server)
    sink = recorder.metrics_sink()
    sink._client = flaky_server
    logger = EpochMetricsLogger(sink, num_epochs=2)
    logger.after_report(None, [{"epoch": 1.0, "val_loss": 0.5}], None)
    logger.after_report(None, [{"epoch": 2.0, "val_loss": 0.4}], None)
    flaky_server.down = False
    assert recorder.outbox.wait(timeout_s=10, until_down=False)
    assert sink.outbox.wait(timeout_s=10, until_down=False)
    assert [step for step, _, _ in flaky_server.points["val_loss"]] == [0, 1]


def test_a_resumed_runs_newest_step_is_never_guessed(refused, flaky_server):
    """A run this job did not create may hold steps it would record twice: its sink asks."""
    sink = MlflowMetricsSink(refused.uri, "0" * 32)
    flaky_server.down = True
    sink._client = flaky_server
    with pytest.raises(Exception, match="Connection refused"):
        sink.newest_step("epoch")


def test_a_run_made_late_and_found_again_is_recorded_to_under_its_first_id(refused, flaky_server):
    """`--resume` finds it by its tag (tracking/job_runs.py): the job's Ray Train run and
    checkpoints were named after the provisional id, so the resumed job keeps it."""
    new_runs.known_as("p" * 32, "s" * 32, "outage")
    recorder = RunRecorder(refused, "p" * 32)
    recorder.client = flaky_server
    assert recorder.waits_in == "outage" and recorder.stored_id == "s" * 32
    assert not recorder.metrics_sink().new_run  # (a resumed run may hold any step)
    recorder.set_tags({"deeprig.resumed": "yes"})
    assert flaky_server.written_to == {"s" * 32}
