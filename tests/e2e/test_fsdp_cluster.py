"""An fsdp job on `deeprig cluster up`'s two-node cluster (a head and a worker node on this
machine, its MLflow server, its shared checkpoint folder): `deeprig submit` of a 2-worker
fsdp job spread one worker a node, one worker process SIGKILLed mid-run, and the job
restarted by Ray Train from the shards both ranks wrote to the cluster's storage, in its
one MLflow run with every epoch logged once. Slow (101 s on 2 CPUs, the job 69 s):
`pytest -m slow`."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import only_run, poll_until
from tests.e2e.conftest import (
    deeprig,
    epoch_history,
    first_epoch_after,
    missing_and_duplicated,
    record_fault,
    submit_digits,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

EPOCHS = 30


@pytest.fixture(scope="module")
def two_nodes(start_cluster):
    return start_cluster(workers=1)


def _train_workers(dashboard: str, alive: bool = False) -> list:
    from ray.util.state import list_actors

    filters = [("class_name", "=", "RayTrainWorker")]
    if alive:
        filters.append(("state", "=", "ALIVE"))
    return list_actors(address=dashboard, filters=filters, detail=True)


@pytest.fixture(scope="module")
def worker_killed(two_nodes):
    """The fsdp job submitted; a worker process killed after epoch 3: (its final status,
    its run, a client, every training worker it had, the seconds it took)."""
    from deeprig.cluster.jobs import jobs_client
    from mlflow import MlflowClient

    home, state = two_nodes
    started = time.monotonic()
    job_id = submit_digits(
        home,
        "fsdp-cluster",
        EPOCHS,
        "scaling.strategy=fsdp",
        "scaling.num_workers=2",
        "failure.max_failures=1",
        "checkpoint={metric: epoch, mode: max, num_to_keep: 1}",
    )
    client = MlflowClient(state.tracking_uri)
    jobs = jobs_client(state.dashboard)

    def status() -> str:
        return str(jobs.get_job_status(job_id)).split(".")[-1]

    def epochs_logged() -> float:
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        runs = [r for r in runs if r.data.tags.get("deeprig.job_name") == "fsdp-cluster"]
        return runs[0].data.metrics.get("epoch", 0) if runs else 0

    running = poll_until(
        lambda: epochs_logged() >= 3,
        timeout_s=300,
        every_s=1,
        while_=lambda: status() in ("PENDING", "RUNNING"),
    )
    assert running, deeprig("logs", job_id, home=home).stdout[-3000:]
    victim = _train_workers(state.dashboard, alive=True)[-1]
    killed_at = time.time()
    os.kill(victim.pid, signal.SIGKILL)  # (a local process: both nodes are this machine)
    ended = poll_until(lambda: status() in ("SUCCEEDED", "FAILED"), timeout_s=420, every_s=2)
    assert ended, status()
    run = only_run(client, "fsdp-cluster")
    # What the restart cost: the epochs it trained again, the time to the first new epoch.
    history = epoch_history(client, run.info.run_id)
    done_before = max((m.step for m in history if m.timestamp / 1000 < killed_at), default=-1)
    resumed = int(run.data.tags.get("deeprig.resumed_from_epoch", 0))
    missing, duplicates = missing_and_duplicated(client, run.info.run_id, EPOCHS)
    first_new = first_epoch_after(client, run.info.run_id, killed_at)
    record_fault(
        "a training worker process SIGKILLed",
        f"fixed fsdp, 2 workers on 2 nodes, {EPOCHS} epochs",
        done_before + 1 - resumed,
        missing,
        duplicates,
        first_new.timestamp / 1000 - killed_at if first_new else None,
        status(),
    )
    return status(), run, client, _train_workers(state.dashboard), time.monotonic() - started


def test_the_fsdp_job_survives_a_killed_worker_in_its_one_run(worker_killed):
    status, run, client, _, seconds = worker_killed
    print(f"fsdp job on 2 nodes, a worker killed after epoch 3: {seconds:.0f} s")
    assert status == "SUCCEEDED"
    assert run.info.status == "FINISHED"
    assert int(run.data.tags["deeprig.resumed_from_epoch"]) >= 3  # from its shards, not 0
    for key in ("epoch", "val_accuracy"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert sorted(steps) == list(range(EPOCHS)), key  # every epoch once
    assert run.data.metrics["val_accuracy"] > 0.9


def test_both_groups_of_workers_ran_one_on_each_node(worker_killed):
    _, _, _, workers, _ = worker_killed
    assert len(workers) == 4, workers  # the first group and the restarted one
    assert len({w.node_id for w in workers}) == 2, workers


def test_the_shards_of_both_ranks_are_in_the_clusters_shared_storage(two_nodes, worker_killed):
    home, state = two_nodes
    _, run, _, _, _ = worker_killed
    checkpoint = Path(run.data.tags["deeprig.checkpoint_path"])
    assert checkpoint.is_relative_to(Path(state.storage))
    files = {p.name for p in (checkpoint / "shards").iterdir()}
    assert files == {".metadata", "__0_0.distcp", "__1_0.distcp"}
    for rank in (0, 1):
        assert (
            run.data.metrics[f"memory.params_held.rank{rank}"]
            < run.data.metrics["model.parameters"] * 0.51
        )
