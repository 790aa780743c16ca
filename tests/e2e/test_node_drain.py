"""Nodes that go under running jobs on a real 3-node cluster on this machine (`deeprig
cluster up --workers 2`: head + 2 worker nodes of 1 CPU): a node drained with notice (`ray
drain-node`, the path a cloud's spot notice takes, then killed at its deadline) is
checkpointed before it goes and the elastic job goes on without it; a fixed-size job whose
node is lost fails within `failure.wait_for_resources_s` (plus one worker-group start
attempt), naming the lost node and what it lacks. Each fault's cost, read from the run's
MLflow records, is a row of benchmarks/faults.py's table. Slow (~6 min): `pytest -m slow`."""

from __future__ import annotations

import time

import pytest

from tests.conftest import only_run, poll_until
from tests.e2e.conftest import (
    deeprig,
    epoch_history,
    job_status,
    kill_node,
    metric_steps,
    missing_and_duplicated,
    newest_worker_node,
    record_fault,
    run_of,
    sizes_by_epoch,
    submit_digits,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

WAIT_FOR_RESOURCES_S = 20


@pytest.fixture(scope="module")
def three_nodes(start_cluster):
    home, _ = start_cluster(workers=2, cpus_per_node=1)
    return home


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
    job_id = submit_digits(
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
        run = run_of(client, name)
        return run.data.tags if run else {}

    assert poll_until(lambda: "deeprig.preempted_at_step" in tags(), 60, 0.5), "no checkpoint"
    checkpointed_s = time.monotonic() - drained_at
    time.sleep(max(0.0, deadline_s - (time.monotonic() - drained_at)))  # (the notice's term)
    killed_at = time.time()
    kill_node(home, role)
    ended = poll_until(
        lambda: job_status(home, job_id) in ("SUCCEEDED", "FAILED"), timeout_s=420, every_s=2
    )
    assert ended and job_status(home, job_id) == "SUCCEEDED", deeprig("logs", job_id, home=home)
    run = only_run(client, name)
    missing, duplicates = missing_and_duplicated(client, run.info.run_id, epochs)
    assert (missing, duplicates) == ([], 0)  # every epoch once
    sizes = epoch_history(client, run.info.run_id, "world_size")
    resumed = int(run.data.tags["deeprig.resumed_from_epoch"])
    first_on_two = next(m for m in sizes if m.value == 2)
    by_epoch = sizes_by_epoch(client, run.info.run_id)
    record_fault(
        f"node drained with a {deadline_s} s notice, killed at its deadline",
        f"elastic ddp, {epochs} epochs, 3 -> 2 workers",
        first_on_two.step - resumed,
        missing,
        duplicates,
        first_on_two.timestamp / 1000 - killed_at,
        f"SUCCEEDED; checkpoint {checkpointed_s:.1f} s after the notice, at step "
        f"{run.data.tags['deeprig.preempted_at_step']}; world_size by epoch {by_epoch}",
    )
    assert run.data.tags["deeprig.preemptions"] == "1"
    # The only checkpoints before the last are the notice's: the restart resumed from the
    # latest, a moment before the node went.
    assert resumed > 0 and 0 <= first_on_two.step - resumed <= 3
    assert [n for n, _ in by_epoch][:2] == [3, 2]
    added = deeprig("cluster", "add-node", home=home)  # 3 nodes again, for the next test
    assert added.returncode == 0, added.stdout + added.stderr


def test_a_fixed_size_job_that_lost_its_node_fails_naming_it(three_nodes):
    """3 workers, one per node, and a node lost: no room for the third worker, so the job
    fails as worker_lost within wait_for_resources_s and one 60 s worker-group start."""
    from deeprig.cluster.local import find_cluster
    from mlflow import MlflowClient

    home, name, epochs = three_nodes, "fixed-digits", 400
    job_id = submit_digits(
        home,
        name,
        epochs,
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
    run = only_run(client, name)
    missing, duplicates = missing_and_duplicated(client, run.info.run_id, epochs)
    held = epochs - len(missing)
    record_fault(
        "worker node SIGKILLed, no node to replace it",
        f"fixed 3 workers, wait_for_resources_s {WAIT_FOR_RESOURCES_S}",
        None,
        [],  # (the epochs after the failure were never trained: none is missing)
        duplicates,
        None,
        f"FAILED as worker_lost {took:.0f} s after the loss, naming the node; "
        f"epochs 0-{held - 1} held",
    )
    assert took < WAIT_FOR_RESOURCES_S + 60 + 60, took
    assert "job failed (worker_lost)" in log, log[-3000:]
    assert "no room for 3 worker(s) x" in log and "STRICT_SPREAD" in log, log[-3000:]
    assert f"nodes lost: {role} at 127.0.0.1 (" in log, log[-3000:]
    assert "the cluster now has 2 node(s), 2 CPU" in log, log[-3000:]
    assert run.info.status == "FAILED" and run.data.tags["deeprig.failure"] == "worker_lost"
    assert missing == list(range(held, epochs)) and duplicates == 0  # what it did, once
