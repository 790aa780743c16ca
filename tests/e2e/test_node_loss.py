"""A node lost under an elastic job, on a real 3-node cluster on this machine (`deeprig
cluster up --workers 2`: head + 2 worker nodes of 1 CPU): the submitted job, one worker per
node (`num_workers: {min: 2, max: 3}`, STRICT_SPREAD), has a worker node's every Ray process
SIGKILLed mid-run, continues on the 2 nodes left from its latest checkpoint, grows back to
3 workers into the node `deeprig cluster add-node` brings, and finishes SUCCEEDED in its one
MLflow run with every epoch logged once. Slow (minutes): `pytest -m slow`."""

from __future__ import annotations

import itertools
import signal
import time

import pytest

from tests.conftest import free_port, only_run, poll_until
from tests.e2e.test_cluster_jobs import deeprig

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

EPOCHS = 120


@pytest.fixture(scope="module")
def three_nodes(tmp_path_factory):
    from deeprig.cluster.local import down, find_cluster

    home = tmp_path_factory.mktemp("node-loss-home")
    ports = ["--port", free_port(), "--dashboard-port", free_port()]
    ports += ["--tracking-port", free_port()]
    up = deeprig(
        "cluster", "up", "--workers", "2", "--cpus-per-node", "1", *map(str, ports), home=home
    )
    assert up.returncode == 0, up.stdout + up.stderr
    state = find_cluster(home)
    from deeprig.cluster.session import use_token_auth_if_available
    from deeprig.tracking.auth import sign_in_if_local_server

    use_token_auth_if_available()
    sign_in_if_local_server(state.tracking_uri, home)
    yield home
    if (state := find_cluster(home)) is not None:
        assert down(state, home) == []  # no process left behind


def kill_node(home, role: str) -> int:
    """SIGKILL every process of the node `role` started (its `ray start`, raylet, workers)."""
    import psutil
    from deeprig.cluster.local import find_cluster

    state = find_cluster(home)
    root = psutil.Process(state.process_groups[role])
    node = [root, *root.children(recursive=True)]
    for process in node:
        process.send_signal(signal.SIGKILL)
    psutil.wait_procs(node, timeout=10)
    return len(node)


@pytest.fixture(scope="module")
def node_lost_and_back(three_nodes):
    """The elastic job submitted; worker-2's node killed after epoch 3; a node added once it
    runs on 2; (its final job status, its run, the seconds each phase took)."""
    from deeprig.cluster.jobs import jobs_client
    from deeprig.cluster.local import find_cluster
    from mlflow import MlflowClient

    home = three_nodes
    state = find_cluster(home)
    submitted = deeprig(
        "submit",
        "jobs/digits_mlp.yaml",
        "--no-wait",
        *("--set", "name=elastic-digits", "--set", "tracking.experiment=elastic"),
        *("--set", f"optim.num_epochs={EPOCHS}", "--set", "failure.max_failures=2"),
        *("--set", "scaling.num_workers={min: 2, max: 3}"),
        *("--set", "scaling.placement_strategy=STRICT_SPREAD"),
        *("--set", "scaling.resize_interval_s=10"),
        home=home,
    )
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job_id = next(w for w in submitted.stdout.split() if w.startswith("deeprig-elastic-digits"))
    client = MlflowClient(state.tracking_uri)

    def sizes():
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        runs = [r for r in runs if r.data.tags.get("deeprig.job_name") == "elastic-digits"]
        if not runs:
            return {}
        history = client.get_metric_history(runs[0].info.run_id, "world_size")
        return {m.step: int(m.value) for m in history}

    jobs = jobs_client(state.dashboard)

    def running() -> bool:
        return str(jobs.get_job_status(job_id)).split(".")[-1] in ("PENDING", "RUNNING")

    timings = {}
    assert poll_until(lambda: len(sizes()) >= 3, timeout_s=240, every_s=1), "no 3 epochs"
    assert set(sizes().values()) == {3}  # started on all 3 nodes
    killed_at = time.monotonic()
    kill_node(home, "worker-2")
    shrunk = poll_until(lambda: 2 in sizes().values(), timeout_s=300, every_s=1, while_=running)
    assert shrunk, deeprig("logs", job_id, home=home).stdout[-3000:]
    timings["loss -> first epoch on 2"] = time.monotonic() - killed_at
    added = deeprig("cluster", "add-node", home=home)
    assert added.returncode == 0, added.stdout + added.stderr
    added_at = time.monotonic()

    def grown():
        seen = sizes()
        last_two = max((s for s, n in seen.items() if n == 2), default=None)
        return any(n == 3 and s > last_two for s, n in seen.items()) if last_two else False

    assert poll_until(grown, timeout_s=300, every_s=1, while_=running), "did not grow back"
    timings["node added -> first epoch on 3"] = time.monotonic() - added_at
    ended = poll_until(
        lambda: str(jobs.get_job_status(job_id)).split(".")[-1] in ("SUCCEEDED", "FAILED"),
        timeout_s=420,
        every_s=2,
    )
    status = str(jobs.get_job_status(job_id)).split(".")[-1]
    assert ended, status
    run = only_run(client, "elastic")
    return status, run, client, timings


def test_the_job_survives_the_node_and_grows_back_in_one_run(node_lost_and_back):
    status, run, client, timings = node_lost_and_back
    assert status == "SUCCEEDED"
    assert run.info.status == "FINISHED"
    for key in ("epoch", "val_accuracy", "world_size"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert sorted(steps) == list(range(EPOCHS)), key  # every epoch once
    sizes = [
        int(m.value)
        for m in sorted(
            client.get_metric_history(run.info.run_id, "world_size"), key=lambda m: m.step
        )
    ]
    runs_of = [(n, sum(1 for _ in group)) for n, group in itertools.groupby(sizes)]
    print(f"world_size by epoch (size, epochs): {runs_of}; timings: {timings}")
    assert [n for n, _ in runs_of] == [3, 2, 3]
    assert run.data.tags["deeprig.world_sizes"] == "3,2,3"
    assert run.data.tags["deeprig.restarts"] == "1"
    assert run.data.metrics["val_accuracy"] > 0.9
