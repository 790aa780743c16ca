"""End to end on a real multi-node Ray cluster on this machine: `deeprig cluster up` (a head
and a worker node via `ray start`, an MLflow tracking server), jobs submitted through the
Ray Jobs API, their runs read back from the server over HTTP, `deeprig cluster down`.

The cluster is shared by the tests of this module (start-up ~20 s) and they run in file
order: the last one brings it down and checks that no process is left.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, only_run, poll_until
from tests.e2e.conftest import deeprig

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def cluster(start_cluster):
    """`deeprig cluster up --workers 1`: a head and a worker node; the last test brings it
    down itself."""
    return start_cluster(workers=1)


def test_cluster_up_starts_two_ray_nodes(cluster):
    from deeprig.cluster.jobs import dashboard_resources

    home, state = cluster
    resources = dashboard_resources(state.dashboard)
    assert resources.nodes == 2
    status = deeprig("cluster", "status", home=home)
    assert status.returncode == 0 and "2 alive" in status.stdout


def test_the_clusters_jobs_api_refuses_a_caller_without_its_token(cluster):
    # On a fresh machine too: `cluster up` makes Ray's token before the head starts.
    import urllib.error
    import urllib.request

    _, state = cluster
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{state.dashboard}/api/jobs/", timeout=10)
    assert refused.value.code in (401, 403)


def test_cluster_up_starts_a_tracking_server(cluster):
    from deeprig.cluster.tracking_server import tracking_healthy

    _, state = cluster
    assert tracking_healthy(state.tracking_uri)


def test_what_the_cluster_keeps_on_disk_is_its_owners_alone(cluster):
    # Every run and the password hashes are read through the server's login, not from disk.
    import stat

    home, _ = cluster
    root = home / "cluster"
    modes = {
        path.relative_to(root).as_posix(): stat.S_IMODE(path.stat().st_mode)
        for path in [
            root,
            root / "cluster.json",
            root / "mlflow.db",
            root / "mlartifacts",
            root / "storage",
            root / "logs",
            *(root / "logs").glob("*.log"),
            root / "auth",
            root / "auth" / "basic_auth.db",
            root / "auth" / "credentials.json",
        ]
    }
    assert {p: m for p, m in modes.items() if m not in (0o600, 0o700)} == {}
    assert modes["mlflow.db"] == modes["auth/basic_auth.db"] == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="becoming a second local user needs root")
def test_a_second_local_user_reaches_runs_only_through_the_servers_login(cluster):
    # The user `nobody` on the same machine: every folder above the cluster's is opened for
    # it to pass through, so only the cluster's own modes stand between it and the files.
    import stat
    import urllib.error
    import urllib.request

    home, state = cluster
    root = home / "cluster"
    opened = [p for p in [*reversed(home.parents), home] if p != Path("/")]
    before = {p: stat.S_IMODE(p.stat().st_mode) for p in opened}
    try:
        for path in opened:
            path.chmod(before[path] | 0o001)
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        for private in ["mlflow.db", "auth/basic_auth.db", "cluster.json", "mlartifacts"]:
            read = subprocess.run(
                [*as_nobody, "ls", "-l", str(root / private)], capture_output=True, text=True
            )
            assert read.returncode != 0 and "Permission denied" in read.stderr, private
        # ...while the server answers it only with a login.
        request = f"{state.tracking_uri}/api/2.0/mlflow/experiments/search?max_results=1"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 401
    finally:
        for path, mode in before.items():
            path.chmod(mode)


# The submitted job's submission ids start with this (deeprig-<job name>-).
SUBMITTED = "deeprig-custom-model-"


@pytest.fixture(scope="module")
def submitted_job(cluster) -> str:
    """jobs/custom_model.yaml (the user's network and data function under code.paths) for
    2 epochs, its 2 workers forced onto different nodes, submitted with `deeprig submit`
    (which waits for it to end): what it printed. One job serves every test of a
    submission: its start on a cluster is ~25 s."""
    home, _ = cluster
    result = deeprig(
        "submit",
        "jobs/custom_model.yaml",
        "--set",
        "optim.num_epochs=2",
        "--set",
        "scaling.placement_strategy=STRICT_SPREAD",
        home=home,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def test_the_jobs_password_is_in_no_spec_metadata_log_or_param(cluster, submitted_job):
    """The job logged as the cluster's jobs user (its credentials in the nodes' environment,
    as MLflow reads them); the password shows up nowhere a user or a log can read."""
    import json

    from deeprig.cluster.jobs import jobs_client
    from mlflow import MlflowClient

    home, state = cluster
    password = json.loads((home / "cluster" / "auth" / "credentials.json").read_text())[
        "jobs_password"
    ]
    submission_id = next(w for w in submitted_job.split() if w.startswith(SUBMITTED))
    client = MlflowClient(state.tracking_uri)
    run = only_run(client, "custom")
    assert password not in submitted_job  # what `deeprig submit` printed
    assert password not in json.dumps(run.data.params) + json.dumps(run.data.tags)
    spec = client.download_artifacts(run.info.run_id, "spec/job.yaml")
    assert password not in Path(spec).read_text()
    jobs = jobs_client(state.dashboard)
    info = jobs.get_job_info(submission_id)
    assert password not in json.dumps(info.metadata) + json.dumps(info.runtime_env or {})
    assert password not in jobs.get_job_logs(submission_id)
    assert password not in (home / "cluster" / "logs" / "mlflow.log").read_text()


def test_submitted_user_code_trains_on_two_nodes(cluster, submitted_job):
    """Both workers import the user's modules, on different nodes."""
    from mlflow import MlflowClient
    from ray.util.state import list_actors

    _, state = cluster
    assert "SUCCEEDED" in submitted_job
    # The two training workers ran on different nodes (Ray keeps dead actors' records).
    workers = list_actors(
        address=state.dashboard, filters=[("class_name", "=", "RayTrainWorker")], detail=True
    )
    assert len({w.node_id for w in workers}) == 2, workers
    run = only_run(MlflowClient(state.tracking_uri), "custom")
    assert run.data.params["model.target"] == "mynets:SmallResNet"
    assert run.data.tags["deeprig.code_sha256"]


def test_submitted_job_records_to_the_tracking_server(cluster, submitted_job):
    import mlflow
    from mlflow import MlflowClient

    _, state = cluster
    output = submitted_job
    # The run is on the tracking server, read over HTTP: finished, both epochs' metrics.
    client = MlflowClient(state.tracking_uri)
    run = only_run(client, "custom")
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert [m.step for m in history] == [0, 1]
    submission_id = next(w for w in output.split() if w.startswith(SUBMITTED))
    assert run.data.tags["deeprig.ray_submission_id"] == submission_id
    # ...and its model downloads through the server's artifact proxy and loads.
    # (MLflow 3 resolves a run's logged model through the global tracking URI; use the
    # server's for this call only, so later tests keep their own stores.)
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(state.tracking_uri):
            model = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model")
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        if previous is not None:
            os.environ["MLFLOW_TRACKING_URI"] = previous
    assert model is not None


def test_runs_on_the_clusters_machine_reads_its_tracking_server(cluster, submitted_job):
    import json

    home, state = cluster
    listed = deeprig("runs", "-o", "json", home=home)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    records = json.loads(listed.stdout)
    assert "custom-model" in {r["job"] for r in records}
    assert {r["store"] for r in records} == {state.tracking_uri}
    table = deeprig("runs", home=home)
    assert table.stdout.splitlines()[0] == (
        f"runs in {state.tracking_uri} (the cluster `deeprig cluster up` started)"
    )


@pytest.fixture(scope="module")
def stopped_job(cluster):
    """A 2000-epoch job submitted with --no-wait, stopped with `deeprig stop` once an epoch is
    recorded: (its submission id, its MLflow run, what `deeprig stop` returned)."""
    from mlflow import MlflowClient

    home, state = cluster
    submitted = deeprig(
        "submit",
        "jobs/digits_cnn.yaml",
        "--set",
        "name=long-cnn",
        "--set",
        "optim.num_epochs=2000",
        "--set",
        "scaling.num_workers=1",  # (one worker starts sooner; the stop is what is tested)
        "--no-wait",
        home=home,
    )
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    submission_id = next(w for w in submitted.stdout.split() if w.startswith("deeprig-long-cnn"))

    client = MlflowClient(state.tracking_uri)

    def run_with_an_epoch():
        runs = client.search_runs(
            [e.experiment_id for e in client.search_experiments()],
            filter_string="tags.`deeprig.job_name` = 'long-cnn'",
        )
        if runs and client.get_metric_history(runs[0].info.run_id, "val_accuracy"):
            return runs[0]
        return None

    # stop it mid-training: once an epoch is recorded
    run = poll_until(run_with_an_epoch, timeout_s=150, every_s=1)
    assert run is not None, deeprig("logs", submission_id, home=home).stdout
    return submission_id, run, deeprig("stop", submission_id, home=home)


def test_stop_ends_the_job_stopped(cluster, stopped_job):
    home, _ = cluster
    submission_id, _, stopped = stopped_job
    assert stopped.returncode == 0 and "STOPPED" in stopped.stdout, stopped.stdout
    assert deeprig("status", submission_id, home=home).returncode == 3  # STOPPED
    listed = deeprig("list", home=home)
    assert submission_id in listed.stdout and "STOPPED" in listed.stdout


def test_stop_marks_its_run_killed(cluster, stopped_job):
    from mlflow import MlflowClient

    _, state = cluster
    _, run, _ = stopped_job
    assert MlflowClient(state.tracking_uri).get_run(run.info.run_id).info.status == "KILLED"


def test_rays_own_job_cli_runs_a_deeprig_job(cluster):
    """As a user would try it: `ray job submit --working-dir . -- deeprig run ...`; the job
    finds the cluster's tracking server in the nodes' environment."""
    from mlflow import MlflowClient

    home, state = cluster
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "ray"),
            "job",
            "submit",
            "--working-dir",
            ".",
            "--",
            "deeprig",
            "run",
            "jobs/digits_cnn.yaml",
            "--set",
            "name=ray-cli-cnn",
            "--set",
            "optim.num_epochs=2",
            "--set",
            "scaling.num_workers=1",  # (what is tested is the way in: one worker starts sooner)
        ],
        cwd=REPO,
        env={**os.environ, "RAY_ADDRESS": state.dashboard, "RAY_AUTH_MODE": "token"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "succeeded" in result.stdout + result.stderr
    client = MlflowClient(state.tracking_uri)
    experiment = client.get_experiment_by_name("digits")
    runs = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`deeprig.job_name` = 'ray-cli-cnn'"
    )
    assert [r.info.status for r in runs] == ["FINISHED"]
    # deeprig seeing it ended records its history on that run, as for its own submissions.
    import re

    submission_id = re.search(r"raysubmit_\w+", result.stdout + result.stderr).group(0)
    assert deeprig("status", submission_id, home=home).returncode == 0
    run = client.get_run(runs[0].info.run_id)
    assert run.data.tags["deeprig.job.status"] == "SUCCEEDED"
    assert "logs/driver.log" in {a.path for a in client.list_artifacts(run.info.run_id, "logs")}


def _log_epochs(uri: str, run_id: str, epochs: int) -> None:
    from deeprig.tracking.sink import MlflowMetricsSink

    sink = MlflowMetricsSink(uri, run_id)
    for epoch in range(1, epochs + 1):
        sink.log({f"m{i}": epoch * 10 + i for i in range(6)}, step=epoch)
    sink.flush()


def test_three_jobs_logging_at_once_lose_no_metric(cluster):
    """Three processes log through deeprig's rank-0 metric sink (asynchronous log_batch per
    epoch) to the one tracking server at the same time; every point arrives."""
    import multiprocessing

    from mlflow import MlflowClient

    _, state = cluster
    client = MlflowClient(state.tracking_uri)
    experiment_id = client.create_experiment("concurrent-logging")
    run_ids = [client.create_run(experiment_id).info.run_id for _ in range(3)]
    epochs = 60
    context = multiprocessing.get_context("spawn")
    writers = [
        context.Process(target=_log_epochs, args=(state.tracking_uri, run_id, epochs))
        for run_id in run_ids
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
        assert writer.exitcode == 0
    for run_id in run_ids:
        for i in range(6):
            history = client.get_metric_history(run_id, f"m{i}")
            assert sorted(m.step for m in history) == list(range(1, epochs + 1))
            assert {m.value for m in history} == {e * 10 + i for e in range(1, epochs + 1)}


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        # (two problems in one refusal: a `deeprig` process costs seconds)
        (
            ["scaling.num_workers=5", "scaling.cpus_per_worker=1.5"],
            [("scaling.num_workers", "has 2"), ("scaling.cpus_per_worker", "exceeds")],
        ),
        # (GPU workers are not counted against the CPUs: a refusal of its own)
        (["scaling.use_gpu=true"], [("scaling.use_gpu", "has 0")]),
    ],
)
def test_submit_refuses_resources_the_cluster_cannot_give(cluster, overrides, named):
    home, state = cluster
    args = [a for o in overrides for a in ("--set", o)]
    result = deeprig("submit", "jobs/digits_cnn.yaml", *args, home=home)
    assert result.returncode == 2
    for field, words in named:
        assert field in result.stderr and words in result.stderr, result.stderr
    assert "submitted" not in result.stdout


@pytest.fixture(scope="module")
def submitted_from_elsewhere(cluster, tmp_path_factory):
    """Another user's machine: no `cluster up` record, so nothing says where the cluster
    keeps runs and checkpoints, and the spec's defaults are node-local: (`deeprig submit`
    with those defaults, `deeprig submit` naming a tracking URI and shared storage)."""
    _, state = cluster
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "other-home"
    result = deeprig("submit", "jobs/digits_cnn.yaml", "--address", state.dashboard, home=elsewhere)
    # Naming a server and shared storage is the fix the message gives.
    fixed = deeprig(
        "submit",
        "jobs/digits_cnn.yaml",
        "--address",
        state.dashboard,
        "--set",
        "tracking.uri=sqlite:////tmp/x.db",
        "--storage",
        "/tmp/shared",
        home=elsewhere,
    )
    return result, fixed


def test_submit_refuses_node_local_tracking_on_a_multi_node_cluster(submitted_from_elsewhere):
    result, fixed = submitted_from_elsewhere
    assert result.returncode == 2
    assert "tracking.uri: the cluster at" in result.stderr
    assert "submitted" not in result.stdout
    assert fixed.returncode == 2
    assert "tracking.uri" in fixed.stderr


def test_submit_refuses_node_local_checkpoints_on_a_multi_node_cluster(submitted_from_elsewhere):
    result, fixed = submitted_from_elsewhere
    assert result.returncode == 2
    assert "checkpoint.storage: the cluster at" in result.stderr
    assert "submitted" not in result.stdout
    assert "checkpoint.storage" not in fixed.stderr  # --storage is the fix


def test_submit_refuses_a_working_dir_over_rays_upload_limit(cluster):
    home, _ = cluster
    # Ray's own limit setting, lowered so that this repository exceeds it.
    result = deeprig("submit", "jobs/digits_cnn.yaml", home=home, RAY_max_grpc_message_size="4096")
    assert result.returncode == 2
    assert "--working-dir" in result.stderr and "Ray accepts at most" in result.stderr
    assert "submitted" not in result.stdout


@pytest.fixture(scope="module")
def failed_before_training(cluster, digits_parquet):
    """A job whose Parquet file is here but not on the cluster (jobs/data/ is git-ignored,
    so Ray does not upload it): valid where it is submitted, exit 2 on the cluster before
    any run exists. (its submission id, what `deeprig submit` printed)"""
    home, _ = cluster
    data = REPO / "jobs" / "data" / "history-e2e.parquet"
    data.parent.mkdir(exist_ok=True)
    data.write_bytes(digits_parquet.read_bytes())
    try:
        result = deeprig(
            "submit",
            "jobs/parquet_digits_gru.yaml",
            "--set",
            "data.path=jobs/data/history-e2e.parquet",
            "--set",
            "name=never-trained",
            home=home,
        )
    finally:
        data.unlink()
    assert result.returncode == 1, result.stdout + result.stderr
    submission_id = next(w for w in result.stdout.split() if w.startswith("deeprig-never-"))
    return submission_id, result.stdout


def test_a_job_that_failed_before_training_gets_a_failed_run_with_its_log(
    cluster, failed_before_training
):
    from mlflow import MlflowClient

    _, state = cluster
    submission_id, printed = failed_before_training
    assert "recorded in MLflow: run" in printed
    client = MlflowClient(state.tracking_uri)
    (run,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`deeprig.ray_submission_id` = '{submission_id}'",
    )
    assert run.info.status == "FAILED"
    assert run.data.tags["deeprig.failure"] == "failed_before_training"
    assert run.data.tags["deeprig.job.status"] == "FAILED"
    log = Path(client.download_artifacts(run.info.run_id, "logs/driver.log")).read_text()
    assert "history-e2e.parquet" in log  # the driver's own account of why


def test_cluster_down_leaves_no_process_behind(cluster):
    from deeprig.cluster.local import find_cluster, processes

    home, state = cluster
    result = deeprig("cluster", "down", home=home)
    assert result.returncode == 0, result.stdout + result.stderr
    assert processes(state) == []
    assert find_cluster(home) is None
    with socket.socket() as sock:  # the dashboard port is free again
        assert sock.connect_ex(("127.0.0.1", int(state.dashboard.rsplit(":", 1)[1]))) != 0


def test_after_down_the_job_history_and_logs_come_from_mlflow(
    cluster, submitted_job, stopped_job, failed_before_training
):
    import json

    home, _ = cluster
    assert deeprig("cluster", "status", home=home).returncode != 0  # the cluster is gone
    listed = deeprig("list", "--history", "-o", "json", home=home)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    status = {r["submission_id"]: r["status"] for r in json.loads(listed.stdout)}
    done = next(w for w in submitted_job.split() if w.startswith(SUBMITTED))
    stopped, never = stopped_job[0], failed_before_training[0]
    assert (status[done], status[stopped], status[never]) == ("SUCCEEDED", "STOPPED", "FAILED")
    table = deeprig("list", "--history", home=home, COLUMNS="80")
    assert done in table.stdout and "SUCCEEDED" in table.stdout
    log = deeprig("logs", done, "--history", home=home)
    assert log.returncode == 0, log.stderr
    assert "SUCCEEDED" in log.stdout or "epoch 2/2" in log.stdout
