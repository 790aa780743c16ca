"""Nodes lost under running jobs, on a real 3-node cluster on this machine (`deeprig cluster
up --workers 2`: head + 2 worker nodes of 1 CPU). An elastic job, one worker per node
(`num_workers: {min: 2, max: 3}`, STRICT_SPREAD), with DDP and with FSDP, has a worker
node's every Ray process SIGKILLed mid-run, continues on the 2 nodes left from its latest
checkpoint, grows back to 3 workers into the node `deeprig cluster add-node` brings, and
finishes SUCCEEDED in its one MLflow run with every epoch logged once. A node drained with
notice (`ray drain-node`, then killed at its deadline) is checkpointed before it goes and
the job goes on without it. A fixed-size job whose node is lost fails within
`failure.wait_for_resources_s` (plus one worker-group start attempt), naming the lost node
and what it lacks. Every node registers on 127.0.0.1. Slow (minutes): `pytest -m slow`."""

from __future__ import annotations

import itertools
import signal
import time

import pytest

from tests.conftest import free_port, only_run, poll_until, runs_in
from tests.e2e.test_cluster_jobs import deeprig

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

EPOCHS = {"ddp": 300, "fsdp": 200}
WAIT_FOR_RESOURCES_S = 20


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
    from deeprig.cluster.ray_env import use_token_auth_if_available
    from deeprig.tracking.auth import sign_in_if_local_server

    use_token_auth_if_available()
    sign_in_if_local_server(state.tracking_uri, home)
    yield home
    if (state := find_cluster(home)) is not None:
        assert down(state, home) == []  # no process left behind


def newest_worker_node(home) -> str:
    """The role (`worker-N`) of the last worker node started that still runs."""
    from deeprig.cluster.local import _group_alive, find_cluster

    state = find_cluster(home)
    groups = state.process_groups.items()
    alive = [r for r, g in groups if r.startswith("worker-") and _group_alive(g)]
    return max(alive, key=lambda role: int(role.split("-")[1]))


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


def controller_lines(home, words: tuple[str, ...]) -> str:
    """The lines of the head node's Ray logs (Ray Train's controller's among them) that
    hold one of `words`: what Ray decided, for a failure's message."""
    from pathlib import Path

    from deeprig.cluster.local import find_cluster

    logs = Path(find_cluster(home).temp_dir) / "session_latest" / "logs"
    lines = [
        f"{path.name}: {line.strip()}"
        for path in logs.rglob("*")
        if path.is_file()
        for line in path.read_text(errors="replace").splitlines()
        if any(word in line for word in words)
    ]
    return "\n".join(lines[-60:])


def reservations(home) -> str:
    """What Ray's autoscaling coordinator (the elastic group's view of room) holds: each
    requester's request and the resources reserved to it, node by node."""
    import os
    import subprocess
    import sys

    from deeprig.cluster.local import find_cluster

    script = (
        "import ray\n"
        f"ray.init(address='{find_cluster(home).gcs_address}', logging_level='ERROR')\n"
        "a = ray.get_actor('AutoscalingCoordinator', namespace='AutoscalingCoordinator')\n"
        "print(ray.get(a.__ray_call__.remote(lambda self: {k: (v.requested_resources, "
        "v.reserved_resources) for k, v in self._ongoing_reqs.items()})))\n"
        "print([(n['NodeName'], n['Alive'], n['Resources'].get('CPU')) for n in ray.nodes()])\n"
    )
    env = os.environ | {"RAY_AUTH_MODE": "token", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    return done.stdout + done.stderr[-2000:]


def submit(home, name: str, epochs: int, *settings: str) -> str:
    """A digits MLP job submitted to the cluster, in experiment `name`; its Ray job id."""
    submitted = deeprig(
        "submit",
        "jobs/digits_mlp.yaml",
        "--no-wait",
        *("--set", f"name={name}", "--set", f"tracking.experiment={name}"),
        *("--set", f"optim.num_epochs={epochs}", "--set", "failure.max_failures=2"),
        *("--set", "scaling.placement_strategy=STRICT_SPREAD"),
        *(item for setting in settings for item in ("--set", setting)),
        home=home,
    )
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    return next(w for w in submitted.stdout.split() if w.startswith(f"deeprig-{name}"))


def job_status(home, job_id: str) -> str:
    from deeprig.cluster.jobs import jobs_client
    from deeprig.cluster.local import find_cluster

    return str(jobs_client(find_cluster(home).dashboard).get_job_status(job_id)).split(".")[-1]


def job_runs(client, experiment: str) -> list:
    """The runs of `experiment`; [] before the job made it (MLflow's basic auth answers 403
    for an experiment that does not exist yet)."""
    from mlflow.exceptions import MlflowException

    try:
        return runs_in(client, experiment)
    except MlflowException:
        return []


def metric_steps(client, experiment: str, key: str) -> dict[int, float]:
    runs = job_runs(client, experiment)
    if not runs:
        return {}
    return {m.step: m.value for m in client.get_metric_history(runs[0].info.run_id, key)}


@pytest.fixture(scope="module", params=["ddp", "fsdp"])
def node_lost_and_back(three_nodes, request):
    """The elastic job submitted; its newest worker node killed after epoch 3; a node added
    once it runs on 2; (strategy, its final job status, its run, client, seconds each
    phase took)."""
    from deeprig.cluster.local import find_cluster
    from mlflow import MlflowClient

    home, strategy = three_nodes, request.param
    name = f"elastic-{strategy}"
    job_id = submit(
        home,
        name,
        EPOCHS[strategy],
        "scaling.num_workers={min: 2, max: 3}",
        "scaling.resize_interval_s=10",
        f"scaling.strategy={strategy}",
    )
    client = MlflowClient(find_cluster(home).tracking_uri)

    def sizes() -> dict[int, int]:
        return {s: int(v) for s, v in metric_steps(client, name, "world_size").items()}

    def running() -> bool:
        return job_status(home, job_id) in ("PENDING", "RUNNING")

    timings = {}
    assert poll_until(lambda: len(sizes()) >= 3, timeout_s=240, every_s=1), "no 3 epochs"
    assert set(sizes().values()) == {3}  # started on all 3 nodes
    killed_at = time.monotonic()
    kill_node(home, newest_worker_node(home))
    shrunk = poll_until(lambda: 2 in sizes().values(), timeout_s=300, every_s=1, while_=running)
    assert shrunk, deeprig("logs", job_id, home=home).stdout[-3000:]
    timings["loss -> first epoch on 2"] = round(time.monotonic() - killed_at, 1)
    added = deeprig("cluster", "add-node", home=home)
    assert added.returncode == 0, added.stdout + added.stderr
    added_at = time.monotonic()

    def grown():
        seen = sizes()
        last_two = max((s for s, n in seen.items() if n == 2), default=None)
        return any(n == 3 and s > last_two for s, n in seen.items()) if last_two else False

    # (what the coordinator holds 40 s after the node joined, should it not grow)
    seen = "" if poll_until(grown, timeout_s=40, every_s=1, while_=running) else reservations(home)
    if not poll_until(grown, timeout_s=300, every_s=1, while_=running):
        said = controller_lines(home, ("resiz", "reserved", "Autoscaling", "resources"))
        said += "\n" + seen
        pytest.fail(f"did not grow back ({job_status(home, job_id)}, {sizes()}):\n{said}")
    timings["node added -> first epoch on 3"] = round(time.monotonic() - added_at, 1)
    ended = poll_until(
        lambda: job_status(home, job_id) in ("SUCCEEDED", "FAILED"), timeout_s=420, every_s=2
    )
    status = job_status(home, job_id)
    assert ended, status
    return strategy, status, only_run(client, name), client, timings


def test_every_node_registers_on_loopback(three_nodes):
    """No node, the GCS included, advertises the machine's network address."""
    from deeprig.cluster.local import find_cluster
    from deeprig.cluster.ray_nodes import node_addresses

    state = find_cluster(three_nodes)
    addresses = node_addresses(state.dashboard)
    assert len(addresses) == 3 and set(addresses) == {"127.0.0.1"}, addresses
    assert state.gcs_address.startswith("127.0.0.1:")


def test_the_job_survives_the_node_and_grows_back_in_one_run(node_lost_and_back):
    strategy, status, run, client, timings = node_lost_and_back
    assert status == "SUCCEEDED"
    assert run.info.status == "FINISHED"
    epochs = EPOCHS[strategy]
    for key in ("epoch", "val_accuracy", "world_size"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert sorted(steps) == list(range(epochs)), key  # every epoch once
    sizes = [
        int(m.value)
        for m in sorted(
            client.get_metric_history(run.info.run_id, "world_size"), key=lambda m: m.step
        )
    ]
    runs_of = [(n, sum(1 for _ in group)) for n, group in itertools.groupby(sizes)]
    print(f"{strategy}: world_size by epoch (size, epochs): {runs_of}; timings: {timings}")
    assert [n for n, _ in runs_of] == [3, 2, 3]
    assert run.data.tags["deeprig.world_sizes"] == "3,2,3"
    assert run.data.tags["deeprig.restarts"] == "1"
    assert run.data.metrics["val_accuracy"] > 0.9


def test_a_drained_node_is_checkpointed_before_it_goes_and_the_job_goes_on(three_nodes):
    """`ray drain-node` with a 20 s deadline (a spot notice), the node killed at the
    deadline as a cloud would: the job checkpoints every epoch after the notice (epoch
    checkpoints otherwise only at the last), resumes from the latest on the nodes left,
    recomputing at most an epoch or two, and finishes in one run with every epoch once."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from deeprig.cluster.local import find_cluster
    from mlflow import MlflowClient
    from ray.util.state import list_nodes

    home, name, epochs, deadline_s = three_nodes, "drained", 200, 20
    job_id = submit(
        home,
        name,
        epochs,
        "scaling.num_workers={min: 2, max: 3}",
        "checkpoint.every_n_epochs=1000",
    )
    state = find_cluster(home)
    client = MlflowClient(state.tracking_uri)
    assert poll_until(lambda: len(metric_steps(client, name, "epoch")) >= 3, 240, 1)
    role = newest_worker_node(home)
    alive = list_nodes(
        address=state.dashboard, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False
    )
    (node,) = [n for n in alive if n.node_name == role]
    drain = subprocess.run(
        [str(Path(sys.executable).parent / "ray"), "drain-node", "--address", state.gcs_address]
        + ["--node-id", node.node_id, "--reason", "DRAIN_NODE_REASON_PREEMPTION"]
        + ["--reason-message", "spot reclaim", "--deadline-remaining-seconds", str(deadline_s)],
        env=os.environ | {"RAY_AUTH_MODE": "token", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    drained_at = time.monotonic()
    assert drain.returncode == 0, drain.stdout + drain.stderr

    def tags() -> dict[str, str]:
        runs = job_runs(client, name)
        return runs[0].data.tags if runs else {}

    assert poll_until(lambda: "deeprig.preempted_at_step" in tags(), 60, 0.5), "no checkpoint"
    checkpointed_s = time.monotonic() - drained_at
    time.sleep(max(0.0, deadline_s - (time.monotonic() - drained_at)))
    kill_node(home, role)
    ended = poll_until(
        lambda: job_status(home, job_id) in ("SUCCEEDED", "FAILED"), timeout_s=420, every_s=2
    )
    assert ended and job_status(home, job_id) == "SUCCEEDED", deeprig("logs", job_id, home=home)
    run = only_run(client, name)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "epoch")]
    assert sorted(steps) == list(range(epochs))  # every epoch once
    sizes = sorted(client.get_metric_history(run.info.run_id, "world_size"), key=lambda m: m.step)
    runs_of = [(n, sum(1 for _ in g)) for n, g in itertools.groupby(int(m.value) for m in sizes)]
    tags_ = run.data.tags
    resumed = int(tags_["deeprig.resumed_from_epoch"])
    first_on_two = next(m.step for m in sizes if m.value == 2)
    print(
        f"drain: checkpoint {checkpointed_s:.1f} s after the notice at step "
        f"{tags_['deeprig.preempted_at_step']}; resumed from epoch {resumed}; epochs "
        f"recomputed {first_on_two - resumed}; world_size by epoch {runs_of}"
    )
    assert tags_["deeprig.preemptions"] == "1"
    # The only checkpoints before the last are the notice's: the restart resumed from the
    # latest, a moment before the node went.
    assert resumed > 0 and 0 <= first_on_two - resumed <= 3
    assert [n for n, _ in runs_of][:2] == [3, 2]
    added = deeprig("cluster", "add-node", home=home)  # 3 nodes again, for the next test
    assert added.returncode == 0, added.stdout + added.stderr


def test_a_fixed_size_job_that_lost_its_node_fails_naming_it(three_nodes):
    """3 workers, one per node, and a node lost: no room for the third worker, so the job
    fails as worker_lost within wait_for_resources_s and one 60 s worker-group start."""
    from deeprig.cluster.local import find_cluster
    from mlflow import MlflowClient

    home, name = three_nodes, "fixed-digits"
    job_id = submit(
        home,
        name,
        400,
        "scaling.num_workers=3",
        f"failure.wait_for_resources_s={WAIT_FOR_RESOURCES_S}",
    )
    client = MlflowClient(find_cluster(home).tracking_uri)
    assert poll_until(lambda: len(metric_steps(client, name, "epoch")) >= 2, 240, 1)
    killed_at = time.monotonic()
    kill_node(home, role := newest_worker_node(home))
    assert poll_until(lambda: job_status(home, job_id) == "FAILED", timeout_s=300, every_s=2)
    took = time.monotonic() - killed_at
    log = " ".join(deeprig("logs", job_id, home=home).stdout.split())  # (lines wrap)
    print(f"fixed-size job: failed {took:.0f} s after its node was lost")
    assert took < WAIT_FOR_RESOURCES_S + 60 + 60, took
    assert "job failed (worker_lost)" in log, log[-3000:]
    assert "no room for 3 worker(s) x" in log and "STRICT_SPREAD" in log, log[-3000:]
    assert f"nodes lost: {role} at 127.0.0.1 (" in log, log[-3000:]
    assert "the cluster now has 2 node(s), 2 CPU" in log, log[-3000:]
    run = only_run(client, name)
    assert run.info.status == "FAILED" and run.data.tags["deeprig.failure"] == "worker_lost"
