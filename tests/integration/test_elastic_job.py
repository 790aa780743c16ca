"""An elastic job (`scaling.num_workers: {min: 1, max: 2}`) on the local Ray survives a
worker killed mid-run: Ray Train's elastic worker group starts again from the latest
checkpoint, in the same MLflow run, every epoch logged once with the world size it ran at."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from tests.conftest import JOBS, deeprig_home_at, embedded_store_client, only_run, poll_until
from tests.integration.conftest import fresh_home

EPOCHS = 6  # a worker is killed after epoch 2: 4 left to resume into


@pytest.fixture(scope="module")
def killed_worker_job(tmp_path_factory, ray_2_cpus):
    """The elastic digits job, one of its Ray Train workers SIGKILLed once epoch 2 is
    recorded: (what the train runner returned or raised, the killed pid, a client)."""
    import ray
    from deeprig.runners import Job, train
    from deeprig.spec import load_spec
    from ray.util.state import list_actors

    address = ray.get_runtime_context().gcs_address
    home = fresh_home(tmp_path_factory, "elastic")
    with deeprig_home_at(home):
        spec = load_spec(
            JOBS / "digits_mlp.yaml",
            [
                "scaling.num_workers={min: 1, max: 2}",
                f"optim.num_epochs={EPOCHS}",
                "tracking.experiment=elastic",
            ],
        )
        outcome: dict = {}

        def fit() -> None:
            try:
                outcome["result"] = train.run(spec, Job(spec_text="", spec_path=JOBS / "x.yaml"))
            except BaseException as exc:  # noqa: BLE001 - reported by the assertions
                outcome["error"] = exc

        client = embedded_store_client(home)  # its tables made before the job's

        def kill_a_worker():
            found = client.get_experiment_by_name("elastic")
            runs = client.search_runs([found.experiment_id]) if found else []
            epochs = runs and client.get_metric_history(runs[0].info.run_id, "epoch")
            workers = list_actors(
                address=address,
                filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")],
            )
            if epochs and len(epochs) >= 2 and workers:
                os.kill(workers[-1].pid, signal.SIGKILL)
                return workers[-1].pid
            return None

        job = threading.Thread(target=fit)
        job.start()
        killed = poll_until(kill_a_worker, timeout_s=120, every_s=0.3, while_=job.is_alive)
        job.join(timeout=240)
    assert killed is not None, "no worker was seen after epoch 2"
    return outcome, killed, client


@pytest.mark.timeout(360)
def test_the_job_ends_succeeded_in_one_run_after_a_worker_dies(killed_worker_job):
    outcome, _, client = killed_worker_job
    assert "error" not in outcome, outcome.get("error")
    run = only_run(client, "elastic")
    assert run.info.status == "FINISHED"
    assert run.data.tags["deeprig.restarts"] == "1"
    assert int(run.data.tags["deeprig.resumed_from_epoch"]) >= 2


def test_every_epoch_is_logged_once_with_its_world_size(killed_worker_job):
    _, _, client = killed_worker_job
    run = only_run(client, "elastic")
    for key in ("epoch", "val_accuracy", "world_size", "batch_per_worker"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert sorted(steps) == list(range(EPOCHS)), key
    sizes = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "world_size")}
    batches = {
        m.step: m.value for m in client.get_metric_history(run.info.run_id, "batch_per_worker")
    }
    assert all(sizes[s] * batches[s] == 64 for s in sizes)  # 32 x 2: the global batch kept
    assert sizes[0] == 2.0  # it started at max: the machine had room
    assert run.data.tags["deeprig.world_sizes"].startswith("2")
    assert run.data.params["effective_batch_size"] == "64"
    assert run.data.metrics["val_accuracy"] > 0.9
