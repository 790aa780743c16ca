"""The outbox and the spool (tracking/outbox.py, tracking/spool.py): a run's records
delivered in order, kept on disk while the tracking server is away, bounded in memory,
each point recorded once however often it is delivered, and uploaded from the spool by
whoever reaches the server next."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
from deeprig.tracking.outbox import (
    Outbox,
    artifact_record,
    dataset_inputs,
    inputs_record,
    metrics_record,
    short_client_retries,
    status_record,
    tags_record,
    unreachable,
)
from deeprig.tracking.spool import spooled_runs, upload

RUN = "0123456789abcdef"


class _AnyTime:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, int) and other > 1_600_000_000_000  # (ms since 1970)


ANY_TIME = _AnyTime()


@pytest.fixture(autouse=True)
def client_settings_restored(monkeypatch):
    """What short_client_retries sets in the process is undone after each test."""
    from deeprig.tracking.outbox import SHORT_CLIENT_RETRIES

    for name in SHORT_CLIENT_RETRIES:
        monkeypatch.setenv(name, "0")
        monkeypatch.delenv(name)


def epoch(step: int) -> dict:
    """One epoch's batch, as the controller's sink makes it (timestamp fixed)."""
    return metrics_record(RUN, [("val_loss", 1.0 / (step + 1), 1_000 + step, step)])


def steps_held(server, key: str = "val_loss") -> list[int]:
    return [step for step, _, _ in server.points.get(key, [])]


def wait_for(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def outbox(flaky_server, tmp_path) -> Outbox:
    return Outbox(lambda: flaky_server, tmp_path / "spool" / RUN, retry_every_s=0.05)


def test_records_reach_the_server_in_the_order_they_were_made(outbox, flaky_server):
    for step in range(50):
        outbox.put(epoch(step))
    assert outbox.wait(timeout_s=10)
    assert steps_held(flaky_server) == list(range(50))


def test_an_outage_keeps_the_records_on_disk_in_order_and_delivers_them_when_it_ends(
    outbox, flaky_server
):
    outbox.put(epoch(0))
    assert outbox.wait(timeout_s=10)
    flaky_server.down = True
    started = time.monotonic()
    for step in range(1, 30):
        outbox.put(epoch(step))
    outbox.send(tags_record(RUN, {"deeprig.stage": "training"}))
    assert not outbox.wait(timeout_s=10)  # (returns once the server is seen away)
    assert time.monotonic() - started < 5, "training waited on the server"
    wait_for(lambda: outbox.pending() == 30 and not outbox._memory)
    (spill,) = outbox.spool_dir.glob("*.jsonl")
    lines = [json.loads(line) for line in spill.read_text().splitlines()]
    assert [r["points"][0][3] for r in lines[:-1]] == list(range(1, 30))
    assert lines[-1]["op"] == "tags"

    flaky_server.down = False
    assert outbox.wait(timeout_s=10, until_down=False)
    assert steps_held(flaky_server) == list(range(30))
    assert flaky_server.tags == {"deeprig.stage": "training"}
    assert not list(outbox.spool_dir.glob("*.jsonl")), "a delivered spill is deleted"


def test_memory_holds_at_most_its_bound_and_the_rest_waits_in_order_on_disk(flaky_server, tmp_path):
    release = threading.Event()

    def slow_client():
        release.wait()  # the server answers nothing until released
        return flaky_server

    box = Outbox(slow_client, tmp_path / RUN, max_in_memory=3, retry_every_s=0.05)
    for step in range(10):
        box.put(epoch(step))
    assert len(box._memory) == 3
    (spill,) = (tmp_path / RUN).glob("*.jsonl")
    assert len(spill.read_text().splitlines()) == 7
    release.set()
    assert box.wait(timeout_s=10)
    assert steps_held(flaky_server) == list(range(10))


def test_a_batch_delivered_again_after_a_lost_answer_is_held_once(outbox, flaky_server):
    flaky_server.drop_answers = 1  # the first attempt is stored, its answer lost
    outbox.put(metrics_record(RUN, [("loss", 0.5, 1_000, 0), ("acc", 0.9, 1_000, 0)]))
    assert outbox.wait(timeout_s=10, until_down=False)
    assert flaky_server.calls == 2, "the batch was not delivered again"
    assert flaky_server.points == {"loss": [(0, 0.5, 1_000)], "acc": [(0, 0.9, 1_000)]}


def test_mlflows_sql_store_holds_a_point_delivered_twice_once(tmp_path):
    """What redelivery relies on, on a real SQL store: a log_batch with points already
    there records only the missing ones."""
    from deeprig.tracking.outbox import deliver
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("outbox", artifact_location=str(tmp_path / "a"))
    run_id = client.create_run(experiment).info.run_id
    first = metrics_record(run_id, [("loss", 0.5, 1_000, 0)])
    both = metrics_record(run_id, [("loss", 0.5, 1_000, 0), ("loss", 0.4, 2_000, 1)])
    deliver(client, first)
    deliver(client, both)
    deliver(client, both)
    history = client.get_metric_history(run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(0, 0.5), (1, 0.4)]


def test_a_store_that_never_goes_away_raises_at_once(flaky_server):
    from mlflow.exceptions import MlflowException

    box = Outbox(lambda: flaky_server, None)  # (the embedded SQLite store)
    flaky_server.down = True
    with pytest.raises(MlflowException):
        box.send(tags_record(RUN, {"a": "b"}))
    assert box.pending() == 0


def test_an_artifact_queued_in_an_outage_is_kept_after_its_file_is_gone(
    outbox, flaky_server, tmp_path
):
    flaky_server.down = True
    made = tmp_path / "made" / "curve.png"
    made.parent.mkdir()
    made.write_bytes(b"png")
    outbox.send(artifact_record(RUN, made, "plots"))
    outbox.send(status_record(RUN, "FINISHED", 5_000))
    made.unlink()
    flaky_server.down = False
    assert outbox.wait(timeout_s=10, until_down=False)
    assert flaky_server.artifacts == {"plots/curve.png": b"png"}
    assert flaky_server.status == "FINISHED"


def test_a_finished_writers_spool_is_uploaded_and_a_running_writers_is_left(flaky_server, tmp_path):
    from mlflow.exceptions import MlflowException

    home = tmp_path / "home"
    folder = home / "spool" / RUN
    folder.mkdir(parents=True)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(gone.stdout)
    records = [epoch(0), epoch(1), status_record(RUN, "FINISHED", 9_000)]
    (folder / f"1-{dead_pid}-a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / f"2-{os.getpid()}-b.jsonl").write_text(json.dumps(epoch(2)) + "\n")
    assert spooled_runs(home) == {RUN: 4}

    flaky_server.down = True
    with pytest.raises(MlflowException):
        upload(flaky_server, RUN, home)
    assert spooled_runs(home) == {RUN: 4}, "an upload cut short leaves the spool as it was"

    flaky_server.down = False
    uploaded = upload(flaky_server, RUN, home)
    assert (uploaded.records, uploaded.skipped_files) == (3, 1)
    assert steps_held(flaky_server) == [0, 1]
    assert flaky_server.status == "FINISHED"
    assert spooled_runs(home) == {RUN: 1}  # (the running writer delivers its own)


def test_the_sink_keeps_training_through_an_outage_and_records_every_epoch_once(
    flaky_server, tmp_path, monkeypatch
):
    from deeprig.tracking.sink import MlflowMetricsSink

    monkeypatch.setenv("DEEPRIG_HOME", str(tmp_path))
    sink = MlflowMetricsSink("http://127.0.0.1:5000", RUN)
    sink._client = flaky_server
    sink.outbox.retry_every_s = 0.05
    sink.log({"val_loss": 0.9}, step=0, timestamp=1.0)
    sink.flush()
    flaky_server.down = True
    for step in range(1, 6):
        sink.log({"val_loss": 0.9 - step / 10}, step=step, timestamp=1.0 + step)
    sink.tag("deeprig.early_stop", "no")
    sink.flush()  # (returns: the server is away)
    assert spooled_runs(tmp_path) == {RUN: 6}
    flaky_server.down = False
    wait_for(lambda: sink.outbox.pending() == 0)
    sink.flush()
    assert steps_held(flaky_server) == list(range(6))
    assert flaky_server.tags == {"deeprig.early_stop": "no"}
    assert spooled_runs(tmp_path) == {}


def test_mlflows_client_retries_are_cut_to_seconds_unless_the_user_set_them(monkeypatch):
    from mlflow.environment_variables import (
        MLFLOW_HTTP_REQUEST_MAX_RETRIES,
        MLFLOW_HTTP_REQUEST_TIMEOUT,
    )

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    short_client_retries()
    assert MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() == 2
    assert MLFLOW_HTTP_REQUEST_TIMEOUT.get() == 60


def test_only_an_absent_server_or_a_run_not_created_yet_is_tried_later():
    """What the outbox keeps for later, as opposed to raising: the server away or saying
    it cannot now (5xx), or the run's creation still queued; a refusal (4xx) or a bug is
    raised at once."""
    import requests
    from deeprig.tracking.new_runs import NotCreatedYet
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, RESOURCE_DOES_NOT_EXIST

    later = [
        ConnectionRefusedError(),
        requests.ConnectionError("reset"),
        requests.Timeout("read timed out"),
        NotCreatedYet("queued"),
        MlflowException("unavailable", error_code=INTERNAL_ERROR),
    ]
    now = [MlflowException("no such run", error_code=RESOURCE_DOES_NOT_EXIST), ValueError()]
    assert [unreachable(e) for e in later] == [True] * len(later)
    assert [unreachable(e) for e in now] == [False] * len(now)


def test_a_recorder_whose_server_is_away_ends_its_run_from_the_spool(
    flaky_server, tmp_path, monkeypatch
):
    from deeprig.tracking.runs import RunRecorder
    from deeprig.tracking.store import TrackingTarget

    monkeypatch.setenv("DEEPRIG_HOME", str(tmp_path))
    recorder = RunRecorder(TrackingTarget("http://127.0.0.1:5000", None), RUN)
    recorder.client = flaky_server
    recorder.outbox.retry_every_s = 0.05
    flaky_server.down = True
    recorder.log_metrics({"best_val_accuracy": 0.97})
    recorder.set_tags({"deeprig.key_metric": "best_val_accuracy"})
    recorder.log_text("name: x\n", "spec/job.yaml")
    recorder.finish("FINISHED")  # (returns: the status waits with the rest)
    assert recorder.spooled() == 4 and flaky_server.status == "RUNNING"
    flaky_server.down = False
    assert recorder.outbox.wait(timeout_s=10, until_down=False)
    assert flaky_server.points == {"best_val_accuracy": [(0, 0.97, ANY_TIME)]}
    assert flaky_server.tags == {"deeprig.key_metric": "best_val_accuracy"}
    assert flaky_server.artifacts == {"spec/job.yaml": b"name: x\n"}
    assert flaky_server.status == "FINISHED" and recorder.spooled() == 0


def test_a_queued_dataset_input_is_sent_as_mlflows_rest_store_sends_it():
    # (the REST store serialises each input to a proto: its tags must be InputTags again)
    from mlflow.entities import Dataset, DatasetInput, InputTag

    made = DatasetInput(
        Dataset("digits", "d1", "code", "{}"), [InputTag("mlflow.data.context", "train")]
    )
    (sent,) = dataset_inputs(inputs_record(RUN, [made.to_dictionary()]))
    assert sent.to_proto() == made.to_proto()
