"""A job's tracking server goes away (every process SIGKILLed) mid-training: the job trains
on, its records wait in its spool, and the run ends holding every epoch exactly once —
when the server comes back on the same port and store, when it never does (the job
ends with its spool; `deeprig runs --sync` uploads it once a server answers), and when
it is down before the job starts (the run is made once the server answers).

Real processes: `mlflow server` serving artifacts, `deeprig run` with a local Ray. The
outage lasts OUTAGE_S (60 s; DEEPRIG_TEST_OUTAGE_S=300 repeats the issue's 5 minutes),
longer than MLflow's client retries as deeprig sets them (tracking/outbox.py)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port, live_group_members

OUTAGE_S = float(os.environ.get("DEEPRIG_TEST_OUTAGE_S", "60"))
# The job below trains ~0.11 s an epoch on this box's 2 CPUs (measured): the epochs are
# counted with less, so that it still trains when the server comes back.
SECONDS_PER_EPOCH = 0.08
KILLED_AT_EPOCH = 5
EPOCH_KEYS = ("epoch", "train_loss", "val_loss", "val_accuracy")
DEEPRIG = str(Path(sys.executable).with_name("deeprig"))

pytestmark = [pytest.mark.slow]


class MlflowServer:
    """`mlflow server` over a SQLite store, serving artifacts, in a process group of its
    own: `kill` is a crash (SIGKILL to every process), `start` brings it back on the same
    port and store."""

    def __init__(self, root: Path, port: int):
        self.root, self.port = root, port
        self.uri = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 90) -> None:
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination", str(self.root / "artifacts"),
            "--serve-artifacts", "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", "1",
        ]  # fmt: skip
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        with (self.root / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer,
            ):
                if answer.status == 200:
                    return
            time.sleep(0.5)
        pytest.fail(f"mlflow server not healthy after {timeout_s} s")

    def kill(self) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        deadline = time.monotonic() + 10
        while live_group_members(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.2)


@pytest.fixture
def server(tmp_path: Path):
    root = tmp_path / "server"
    root.mkdir()
    server = MlflowServer(root, free_port())
    server.start()
    yield server
    if server.process is not None and server.process.poll() is None:
        server.kill()


def start_job(tmp_path: Path, server: MlflowServer, epochs: int) -> subprocess.Popen:
    """`deeprig run` of a 1-worker MLP on digits for `epochs` epochs, recording to `server`."""
    spec = tmp_path / "outage.yaml"
    spec.write_text(
        "name: outage\nkind: train\nseed: 0\n"
        "model: {name: mlp, hidden: [64]}\n"
        'data: {source: "builtin:digits", val_fraction: 0.2}\n'
        f"optim: {{name: adamw, lr: 0.003, batch_size: 16, num_epochs: {epochs}}}\n"
        "scaling: {num_workers: 1}\n"
        "checkpoint: {num_to_keep: 1, metric: val_accuracy, mode: max, every_n_epochs: 10}\n"
        "tracking: {experiment: outage}\n"
    )
    env = dict(os.environ, DEEPRIG_HOME=str(tmp_path / "job-home"), MLFLOW_TRACKING_URI=server.uri)
    with (tmp_path / "job.out").open("wb") as out:
        return subprocess.Popen(
            [DEEPRIG, "run", str(spec)], stdout=out, stderr=subprocess.STDOUT, env=env
        )


def job_output(tmp_path: Path) -> str:
    return (tmp_path / "job.out").read_text(errors="replace")


def the_run(server: MlflowServer):
    from mlflow import MlflowClient

    client = MlflowClient(server.uri)
    experiment = client.get_experiment_by_name("outage")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    return client, (runs[0] if runs else None)


def wait_for_epoch(server: MlflowServer, job: subprocess.Popen, epoch: int, tmp_path: Path):
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert job.poll() is None, job_output(tmp_path)
        with contextlib.suppress(Exception):
            client, run = the_run(server)
            if run and run.data.metrics.get("epoch", 0) >= epoch:
                return run.info.run_id
        time.sleep(0.5)
    pytest.fail(f"no epoch {epoch} after 240 s:\n{job_output(tmp_path)}")


def epoch_points(server: MlflowServer, run_id: str, epochs: int) -> dict[str, dict[str, int]]:
    """Per key: points expected (one per epoch), logged, duplicated, missing."""
    from mlflow import MlflowClient

    client = MlflowClient(server.uri)
    counts = {}
    for key in EPOCH_KEYS:
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        counts[key] = {
            "expected": epochs,
            "logged": len(steps),
            "duplicated": len(steps) - len(set(steps)),
            "missing": len(set(range(epochs)) - set(steps)),
        }
    return counts


def newest_spooled_epoch(spool: Path) -> int:
    """The newest epoch waiting in a spool (every writer's files of every run in it); 0
    when none."""
    newest = 0
    for path in spool.glob("*/*.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record["op"] == "metrics":
                epochs = [int(value) for key, value, *_ in record["points"] if key == "epoch"]
                newest = max([newest, *epochs])
    return newest


def wait_for_delivery(server: MlflowServer, experiment: str, epoch: int) -> float:
    """Seconds until the experiment's run holds epoch `epoch` (the newest a spool held
    when the server came back: the records before it arrive in order)."""
    from mlflow import MlflowClient

    started = time.monotonic()
    client = MlflowClient(server.uri)
    while time.monotonic() - started < 300:
        with contextlib.suppress(Exception):
            found = client.get_experiment_by_name(experiment)
            runs = client.search_runs([found.experiment_id]) if found else []
            history = client.get_metric_history(runs[0].info.run_id, "epoch") if runs else []
            if any(m.value >= epoch for m in history):
                return time.monotonic() - started
        time.sleep(0.2)
    pytest.fail(f"epoch {epoch} not delivered 300 s after the server came back")


def artifact_paths(server: MlflowServer, run_id: str) -> set[str]:
    from mlflow import MlflowClient

    client = MlflowClient(server.uri)
    found, folders = set(), [""]
    while folders:
        for item in client.list_artifacts(run_id, folders.pop() or None):
            (folders.append(item.path) if item.is_dir else found.add(item.path))
    return found


def report(test_artifacts: Path, name: str, numbers: dict) -> None:
    """The numbers for the issue's note, printed and left in tests/e2e/artifacts/."""
    print(json.dumps(numbers, indent=2))
    (test_artifacts / f"{name}.json").write_text(json.dumps(numbers, indent=2))


@pytest.mark.timeout(int(OUTAGE_S) + 600)
def test_a_server_down_for_longer_than_the_client_retries_loses_and_repeats_nothing(
    server, tmp_path, test_artifacts
):
    epochs = int((OUTAGE_S + 90) / SECONDS_PER_EPOCH)  # still training when it is back
    started = time.monotonic()
    job = start_job(tmp_path, server, epochs)
    try:
        run_id = wait_for_epoch(server, job, KILLED_AT_EPOCH, tmp_path)
        server.kill()
        killed_at = time.monotonic()
        time.sleep(OUTAGE_S)
        spool = tmp_path / "job-home" / "spool" / run_id
        kept = sorted(p.name for p in spool.glob("*.jsonl"))
        assert job.poll() is None, f"the job ended in the outage:\n{job_output(tmp_path)}"
        server.start()
        back_at = time.monotonic()
        backlog = wait_for_delivery(server, "outage", newest_spooled_epoch(spool.parent))
        assert job.wait(timeout=600) == 0, job_output(tmp_path)
        ended_at = time.monotonic()
    finally:
        if job.poll() is None:
            job.kill()
    assert kept, "nothing waited in the spool during the outage"
    points = epoch_points(server, run_id, epochs)
    for key, count in points.items():
        assert count["logged"] == epochs and not count["duplicated"], (key, count)
    client, run = the_run(server)
    assert run.info.status == "FINISHED"
    assert run.data.tags.get("deeprig.key_metric") == "best_val_accuracy"
    artifacts = artifact_paths(server, run_id)
    assert {"spec/job.yaml", "plots/learning_curve.png"} <= artifacts, artifacts
    assert any(p.startswith("checkpoints/best/") for p in artifacts), artifacts
    assert not spool.exists(), "the spool is left after the server came back"
    report(
        test_artifacts,
        "tracking_outage_and_return",
        {
            "outage_s": OUTAGE_S,
            "epochs": epochs,
            "points": points,
            "job_s": round(ended_at - started, 1),
            "job_end_after_server_back_s": round(ended_at - back_at, 1),
            "backlog_delivered_after_server_back_s": round(backlog, 1),
            "spool_files_during_outage": len(kept),
            "killed_after_s": round(killed_at - started, 1),
        },
    )


@pytest.mark.timeout(900)
def test_a_server_that_never_returns_leaves_a_spool_that_sync_uploads_complete(
    server, tmp_path, test_artifacts
):
    epochs = 150
    job = start_job(tmp_path, server, epochs)
    try:
        run_id = wait_for_epoch(server, job, KILLED_AT_EPOCH, tmp_path)
        server.kill()
        started_waiting = time.monotonic()
        assert job.wait(timeout=600) == 0, job_output(tmp_path)
        job_s = time.monotonic() - started_waiting
    finally:
        if job.poll() is None:
            job.kill()
    output = job_output(tmp_path)
    assert "deeprig runs --sync" in output, output
    spool = tmp_path / "job-home" / "spool" / run_id
    assert list(spool.glob("*.jsonl")), "the job kept no records"

    server.start()
    env = dict(os.environ, DEEPRIG_HOME=str(tmp_path / "job-home"), MLFLOW_TRACKING_URI=server.uri)
    synced = subprocess.run(
        [DEEPRIG, "runs", "--sync"], env=env, capture_output=True, text=True, timeout=300
    )
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert run_id in synced.stdout, synced.stdout
    points = epoch_points(server, run_id, epochs)
    for key, count in points.items():
        assert count["logged"] == epochs and not count["duplicated"], (key, count)
    client, run = the_run(server)
    assert run.info.status == "FINISHED"
    assert run.data.tags.get("deeprig.key_metric") == "best_val_accuracy"
    assert "best_val_accuracy" in run.data.metrics
    artifacts = artifact_paths(server, run_id)
    assert "spec/job.yaml" in artifacts
    assert any(p.startswith("checkpoints/best/") for p in artifacts), artifacts
    assert not spool.exists()
    again = subprocess.run(
        [DEEPRIG, "runs", "--sync"], env=env, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0 and "no records kept locally" in again.stdout, again.stdout
    report(
        test_artifacts,
        "tracking_never_returns",
        {"epochs": epochs, "points": points, "job_end_after_kill_s": round(job_s, 1)},
    )


@pytest.mark.timeout(600)
def test_a_job_started_while_its_server_is_down_trains_and_its_run_is_made_when_it_answers(
    server, tmp_path, test_artifacts
):
    epochs = int(90 / SECONDS_PER_EPOCH)  # still training when the server is back
    server.kill()
    killed_at = time.monotonic()
    job = start_job(tmp_path, server, epochs)
    spool = tmp_path / "job-home" / "spool"
    try:
        deadline = time.monotonic() + 240
        while newest_spooled_epoch(spool) < KILLED_AT_EPOCH:
            assert job.poll() is None, f"the job ended:\n{job_output(tmp_path)}"
            assert time.monotonic() < deadline, f"no epoch kept:\n{job_output(tmp_path)}"
            time.sleep(0.5)
        [provisional] = [p.name for p in spool.iterdir()]
        kept = newest_spooled_epoch(spool)
        server.start()
        back_at = time.monotonic()
        backlog = wait_for_delivery(server, "outage", kept)
        assert job.wait(timeout=600) == 0, job_output(tmp_path)
        ended_at = time.monotonic()
    finally:
        if job.poll() is None:
            job.kill()
    output = job_output(tmp_path)
    assert "did not answer" in output and "made the run" in output, output
    client, run = the_run(server)
    assert run.data.tags["deeprig.provisional_run_id"] == provisional != run.info.run_id
    assert run.info.run_id in output, output
    points = epoch_points(server, run.info.run_id, epochs)
    for key, count in points.items():
        assert count["logged"] == epochs and not count["duplicated"], (key, count)
    assert run.info.status == "FINISHED"
    assert run.data.tags.get("deeprig.key_metric") == "best_val_accuracy"
    assert run.data.params["name"] == "outage"
    artifacts = artifact_paths(server, run.info.run_id)
    assert {"spec/job.yaml", "plots/learning_curve.png"} <= artifacts, artifacts
    assert not (spool / provisional).exists()
    report(
        test_artifacts,
        "tracking_down_at_start",
        {
            "outage_s": round(back_at - killed_at, 1),
            "epochs": epochs,
            "epochs_kept_before_return": kept,
            "points": points,
            "backlog_delivered_after_server_back_s": round(backlog, 1),
            "job_end_after_server_back_s": round(ended_at - back_at, 1),
        },
    )


WRITER_AWAY = """
import sys, time
from pathlib import Path
from deeprig.tracking.runs import RunRecorder
from deeprig.tracking.store import TrackingTarget

uri, run_id, folder = sys.argv[1:]
recorder = RunRecorder(TrackingTarget(uri, None), run_id)
started = time.monotonic()
recorder.log_metrics({"best_loss": 0.25}, step=3)
recorder.set_tags({"deeprig.key_metric": "best_loss"})
(Path(folder) / "notes.txt").write_text("kept")
recorder.log_directory(folder, "notes")
recorder.finish("FINISHED")
print(f"waited {time.monotonic() - started:.1f}")
"""


@pytest.mark.timeout(300)
def test_a_real_server_killed_and_restarted_holds_every_point_once_without_ray(
    server, tmp_path, monkeypatch
):
    """The sink and the recorder against a real `mlflow server` (HTTP, its SQL store), no
    Ray: points sent while it is SIGKILLed wait in the spool and arrive once when it is
    back; a process that ends while it is away leaves its records, tags, artifacts and
    status to `deeprig runs --sync`."""
    from deeprig.tracking.sink import MlflowMetricsSink
    from deeprig.tracking.spool import spooled_runs
    from mlflow import MlflowClient

    home = tmp_path / "home"
    monkeypatch.setenv("DEEPRIG_HOME", str(home))
    client = MlflowClient(server.uri)
    run_id = client.create_run(client.create_experiment("direct")).info.run_id
    sink = MlflowMetricsSink(server.uri, run_id)
    sink.outbox.retry_every_s = 0.5
    for step in range(30):
        if step == 10:
            sink.flush()
            server.kill()
            killed = time.monotonic()
        sink.log({"loss": 1 / (step + 1)}, step=step, timestamp=1_000 + step)
    sink.tag("deeprig.stage", "trained")
    sink.flush()  # (returns once the server is seen away)
    assert time.monotonic() - killed < 60, "the sink waited on the server"
    assert spooled_runs(home) == {run_id: 21}
    server.start()
    deadline = time.monotonic() + 60
    while sink.outbox.pending() and time.monotonic() < deadline:
        time.sleep(0.2)
    sink.flush()
    steps = [m.step for m in MlflowClient(server.uri).get_metric_history(run_id, "loss")]
    assert sorted(steps) == list(range(30)), steps
    assert client.get_run(run_id).data.tags["deeprig.stage"] == "trained"
    assert spooled_runs(home) == {}

    server.kill()
    (tmp_path / "notes").mkdir()
    env = dict(os.environ, DEEPRIG_HOME=str(home), MLFLOW_TRACKING_URI=server.uri)
    away = subprocess.run(
        [sys.executable, "-c", WRITER_AWAY, server.uri, run_id, str(tmp_path / "notes")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert away.returncode == 0, away.stderr
    assert spooled_runs(home) == {run_id: 4}
    server.start()
    synced = subprocess.run(
        [DEEPRIG, "runs", "--sync", run_id], env=env, capture_output=True, text=True, timeout=120
    )
    assert synced.returncode == 0, synced.stdout + synced.stderr
    run = MlflowClient(server.uri).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["best_loss"] == 0.25
    assert run.data.tags["deeprig.key_metric"] == "best_loss"
    assert artifact_paths(server, run_id) == {"notes/notes.txt"}
    assert spooled_runs(home) == {}
    print(f"a write while the server is away: {away.stdout.strip()} s")


@pytest.mark.timeout(180)
def test_cluster_up_on_a_running_cluster_starts_again_only_its_tracking_server(tmp_path):
    """`up`'s restart of a tracking server that is gone (no Ray needed to show it): the
    server comes back on its port over the same store, and one that runs is left alone,
    unless asked to restart it (`cluster restart tracking`)."""
    from deeprig.cluster.local import restart_tracking
    from deeprig.cluster.state import LocalCluster
    from deeprig.cluster.tracking_server import tracking_store
    from mlflow import MlflowClient

    home = tmp_path / "home"
    gone = subprocess.Popen(["true"], start_new_session=True)
    gone.wait()
    port = free_port()
    cluster = LocalCluster(
        dashboard="http://127.0.0.1:1",
        gcs_address="127.0.0.1:1",
        tracking_uri=f"http://127.0.0.1:{port}",
        storage=str(tmp_path / "storage"),
        temp_dir=str(tmp_path / "ray"),
        workers=0,
        cpus_per_node=1,
        process_groups={"mlflow": gone.pid},
        logs=str(tmp_path / "logs"),
        auth=False,
    )
    (tmp_path / "logs").mkdir()
    try:
        assert restart_tracking(cluster, home, timeout_s=120, say=print)
        client = MlflowClient(cluster.tracking_uri)
        client.create_experiment("kept")
        assert tracking_store(home).database.exists()
        assert not restart_tracking(cluster, home, timeout_s=120, say=print)
        os.killpg(cluster.process_groups["mlflow"], signal.SIGKILL)
        time.sleep(1)
        assert restart_tracking(cluster, home, timeout_s=120, say=print)
        assert client.get_experiment_by_name("kept") is not None, "a new store"
        before = cluster.process_groups["mlflow"]  # (`cluster restart tracking`: one that runs)
        assert restart_tracking(cluster, home, timeout_s=120, say=print, running_too=True)
        assert cluster.process_groups["mlflow"] != before
        assert client.get_experiment_by_name("kept") is not None, "a new store"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(cluster.process_groups["mlflow"], signal.SIGKILL)
