"""Nodes lost under running elastic jobs, and nodes back, on a real 3-node cluster on this
machine (`deeprig cluster up --workers 2`: head + 2 worker nodes of 1 CPU). An elastic job,
one worker per node (`num_workers: {min: 2, max: 3}`, STRICT_SPREAD), with DDP and with
FSDP, has a worker node's every Ray process SIGKILLed mid-run, continues on the 2 nodes
left from its latest checkpoint, grows back to 3 workers into the node `deeprig cluster
add-node` brings, and finishes SUCCEEDED in its one MLflow run with every epoch logged
once. Every node registers on 127.0.0.1. Each fault's cost, read from the run's MLflow
records, is a row of benchmarks/faults.py's table. Slow (~12 min): `pytest -m slow`.

When Ray grows the job: its elastic policy looks for room every `resize_interval_s`, in the
reservations of Ray's autoscaling coordinator, which sees the cluster's nodes anew only
every `TICK_INTERVAL_S` (20 s); the resize then restarts the workers. A job that ends
sooner after the node joins ends at 2 workers: the test sizes its jobs so that this window
fits in what is left of them, and says so when it does not (a DDP run of 300 epochs ended,
SUCCEEDED at 2, ~25 s after the node joined)."""

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

EPOCHS = {"ddp": 1000, "fsdp": 350}
RESIZE_INTERVAL_S = 5
WORKER_GROUP_START_S = 30  # a group of 3 workers' start on this 2-CPU machine: ~17 s


def grow_window_s() -> float:
    """The longest a joined node waits for the job to grow into it (see the docstring)."""
    from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
        _AutoscalingCoordinatorActor,
    )

    return _AutoscalingCoordinatorActor.TICK_INTERVAL_S + RESIZE_INTERVAL_S + WORKER_GROUP_START_S


@pytest.fixture(scope="module")
def three_nodes(start_cluster):
    home, _ = start_cluster(workers=2, cpus_per_node=1)
    return home


@pytest.fixture(scope="module", params=["ddp", "fsdp"])
def node_lost_and_back(three_nodes, request):
    """The elastic job submitted; its newest worker node killed after epoch 3; a node added
    once it runs on 2: (strategy, its final job status, its run, client). Each fault's row
    recorded."""
    from deeprig.cluster.local import find_cluster
    from mlflow import MlflowClient

    home, strategy = three_nodes, request.param
    name, epochs = f"elastic-{strategy}", EPOCHS[strategy]
    job_id = submit_digits(
        home,
        name,
        epochs,
        "scaling.num_workers={min: 2, max: 3}",
        f"scaling.resize_interval_s={RESIZE_INTERVAL_S}",
        f"scaling.strategy={strategy}",
    )
    client = MlflowClient(find_cluster(home).tracking_uri)

    def sizes() -> dict[int, int]:
        return {s: int(v) for s, v in metric_steps(client, name, "world_size").items()}

    def running() -> bool:
        return job_status(home, job_id) in ("PENDING", "RUNNING")

    def resumed_from() -> int | None:
        run = run_of(client, name)
        epoch = run.data.tags.get("deeprig.resumed_from_epoch") if run else None
        return None if epoch is None else int(epoch)

    assert poll_until(lambda: len(sizes()) >= 3, timeout_s=240, every_s=1), "no 3 epochs"
    assert set(sizes().values()) == {3}  # started on all 3 nodes
    killed_at = time.time()
    kill_node(home, newest_worker_node(home))
    shrunk = poll_until(lambda: 2 in sizes().values(), timeout_s=300, every_s=1, while_=running)
    assert shrunk, deeprig("logs", job_id, home=home).stdout[-3000:]
    resumed_at_loss = poll_until(resumed_from, timeout_s=30, every_s=1)
    assert resumed_at_loss is not None, "the restart on 2 tagged no resumed_from_epoch"
    added = deeprig("cluster", "add-node", home=home)
    assert added.returncode == 0, added.stdout + added.stderr
    added_at = time.time()
    run_id = run_of(client, name).info.run_id

    # What is left of the job must outlast Ray's window to grow it, or it ends at 2.
    on_two = [m for m in epoch_history(client, run_id, "world_size") if m.value == 2]
    assert len(on_two) >= 2, on_two
    epoch_s = (on_two[-1].timestamp - on_two[0].timestamp) / 1000 / (len(on_two) - 1)
    left_s = (epochs - 1 - on_two[-1].step) * epoch_s
    assert left_s > 1.2 * grow_window_s(), (
        f"{name} has ~{left_s:.0f} s left at {epoch_s:.2f} s an epoch, under 1.2 x the "
        f"{grow_window_s():.0f} s Ray may take to grow it: raise EPOCHS['{strategy}']"
    )

    def grown():
        seen = sizes()
        last_two = max((s for s, n in seen.items() if n == 2), default=None)
        return any(n == 3 and s > last_two for s, n in seen.items()) if last_two else False

    if not poll_until(grown, timeout_s=300, every_s=1, while_=running):
        log = deeprig("logs", job_id, home=home).stdout[-3000:]
        sizes_now = sizes_by_epoch(client, run_id)
        pytest.fail(f"did not grow back ({job_status(home, job_id)}, {sizes_now}):\n{log}")
    resumed_at_return = poll_until(
        lambda: (n := resumed_from()) != resumed_at_loss and n, timeout_s=30, every_s=1
    )
    ended = poll_until(
        lambda: job_status(home, job_id) in ("SUCCEEDED", "FAILED"), timeout_s=420, every_s=2
    )
    status = job_status(home, job_id)
    assert ended, status

    run = only_run(client, name)
    history = epoch_history(client, run.info.run_id, "world_size")
    first_on_two = next(m for m in history if m.value == 2)
    first_back = next(m for m in history if m.value == 3 and m.step > first_on_two.step)
    missing, duplicates = missing_and_duplicated(client, run.info.run_id, epochs)
    outcome = f"{status}; world_size by epoch {sizes_by_epoch(client, run.info.run_id)}"
    record_fault(
        "worker node SIGKILLed (every Ray process)",
        f"elastic {strategy}, {epochs} epochs, 3 -> 2 workers",
        first_on_two.step - resumed_at_loss,
        missing,
        duplicates,
        first_on_two.timestamp / 1000 - killed_at,
        outcome,
    )
    record_fault(
        "node back (`deeprig cluster add-node`)",
        f"elastic {strategy}, 2 -> 3 workers",
        first_back.step - resumed_at_return if resumed_at_return else None,
        missing,
        duplicates,
        first_back.timestamp / 1000 - added_at,
        outcome,
    )
    return strategy, status, run, client


def test_every_node_registers_on_loopback(three_nodes):
    """No node, the GCS included, advertises the machine's network address."""
    from deeprig.cluster.local import find_cluster
    from deeprig.cluster.ray_nodes import node_addresses

    state = find_cluster(three_nodes)
    addresses = node_addresses(state.dashboard)
    assert len(addresses) == 3 and set(addresses) == {"127.0.0.1"}, addresses
    assert state.gcs_address.startswith("127.0.0.1:")


def test_the_job_survives_the_node_and_grows_back_in_one_run(node_lost_and_back):
    strategy, status, run, client = node_lost_and_back
    assert status == "SUCCEEDED"
    assert run.info.status == "FINISHED"
    epochs = EPOCHS[strategy]
    for key in ("epoch", "val_accuracy", "world_size"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert sorted(steps) == list(range(epochs)), key  # every epoch once
    assert [n for n, _ in sizes_by_epoch(client, run.info.run_id)] == [3, 2, 3]
    assert run.data.tags["deeprig.world_sizes"] == "3,2,3"
    assert run.data.tags["deeprig.restarts"] == "1"
    assert run.data.metrics["val_accuracy"] > 0.9
