"""`deeprig run` on a real local Ray (2 CPUs) with a real MLflow store. A job whose outcome
several tests check runs once, in a module-scoped fixture."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
from deeprig.cli import app
from mlflow import MlflowClient
from typer.testing import CliRunner

from tests.conftest import (
    JOBS,
    deeprig_home_at,
    embedded_store_client,
    only_run,
    poll_until,
    runs_in,
)
from tests.integration.conftest import fresh_home, run_in_fresh_home

pytestmark = pytest.mark.usefixtures("ray_2_cpus")


def run_cli(*args: str):
    return CliRunner().invoke(app, ["run", *args], catch_exceptions=False)


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found.add(item.path)
        if item.is_dir:
            found |= artifact_paths(client, run_id, item.path)
    return found


# A min_delta no epoch's val_loss can beat: early stopping ends the 50-epoch job after
# exactly 1 + patience = 4 epochs, whatever the losses, so the tests below know its length.
STOPS_AFTER_4 = "early_stopping={metric: val_loss, patience: 3, min_delta: 1000.0}"


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory, ray_2_cpus):
    """quickstart.yaml for up to 50 epochs, stopped early after 4 (its best checkpoint by
    val_loss): (the CLI's result, its home, a client on its store, its one MLflow run)."""
    home = fresh_home(tmp_path_factory, "quickstart")
    with deeprig_home_at(home):
        result = run_cli(
            str(JOBS / "quickstart.yaml"),
            "--set",
            "optim.num_epochs=50",
            "--set",
            STOPS_AFTER_4,
            "--set",
            "checkpoint={metric: val_loss, mode: min, num_to_keep: 2}",
            "--set",
            "tracking.log_every_n_steps=5",
            "--set",
            "optim.accumulate_steps=2",
        )
    assert result.exit_code == 0, result.output
    client = embedded_store_client(home)
    return result, home, client, only_run(client, "quickstart")


def test_quickstart_trains_two_workers(quickstart):
    result, _, client, run = quickstart
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert sorted(m.step for m in history) == [0, 1, 2, 3]
    assert max(m.value for m in history) > 0.85  # 4 epochs of an MLP on digits
    for key in ("train_loss", "val_loss", "epoch_time_s", "samples_per_s"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 4
    # Throughput: the MLP's FLOPs per sample, and MFU against this node's matmul peak.
    assert all(0 < m.value < 1 for m in client.get_metric_history(run.info.run_id, "mfu"))
    assert run.data.metrics["model_flops_per_s"] > 0 and "mfu" in result.output
    assert run.data.params["flops_per_sample"] == "85760"
    assert run.data.params["peak_flops_source"].startswith("measured: float32")


def test_quickstart_logs_a_point_every_5_optimiser_steps(quickstart):
    _, _, client, run = quickstart
    # 1438 training rows over 2 workers: 719 each, 23 batches of 32, 12 steps of 2 batches.
    assert run.data.params["effective_batch_size"] == "128"  # 2 batches x 32 x 2 workers
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "step/train_loss")]
    assert steps == list(range(5, 4 * 12 + 1, 5))
    assert all(m.value > 0 for m in client.get_metric_history(run.info.run_id, "step/lr"))
    params = run.data.params
    assert params["model.name"] == "mlp" and params["scaling.num_workers"] == "2"


def test_quickstart_records_one_mlflow_run(quickstart):
    result, home, client, run = quickstart  # only_run: one run, no more
    assert run.info.status == "FINISHED"
    assert run.info.run_id in result.output  # the user is told which run it was

    assert run.data.params["optim.num_epochs"] == "50"  # the --set override is what was recorded
    tags = run.data.tags
    assert tags["deeprig.kind"] == "train" and len(tags["deeprig.spec_hash"]) == 64
    assert tags["deeprig.version.ray"] == "2.60.0" and tags["deeprig.ray_job_id"]
    assert tags.get("deeprig.git_commit") or not (Path.cwd() / ".git").exists()

    artifacts = artifact_paths(client, run.info.run_id)
    assert {"spec/job.yaml", "plots/learning_curve.png", "checkpoints/best/checkpoint.pt"} <= (
        artifacts
    )
    # The model is logged with its signature and loads without deeprig's help.
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    assert model.metadata.signature is not None
    import numpy as np

    images = np.zeros((3, 8, 8), dtype=np.float32)
    assert set(model.predict(images).tolist()) <= set(range(10))  # a digit per image
    assert model.predict(images, params={"proba": True}).shape == (3, 10)


def test_quickstart_fills_mlflows_own_fields(quickstart):
    """The run page's Source, User, Description, Datasets and system metrics are filled."""
    _, _, client, run = quickstart
    tags = run.data.tags
    assert tags["mlflow.source.name"].endswith("jobs/quickstart.yaml")
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.user"]
    assert tags["mlflow.note.content"].startswith("Quickstart: a dense network")
    inputs = {d.dataset.name: d for d in client.get_run(run.info.run_id).inputs.dataset_inputs}
    assert set(inputs) == {"quickstart-train", "quickstart-validation"}
    contexts = {d.dataset.name: {t.key: t.value for t in d.tags} for d in inputs.values()}
    assert contexts["quickstart-train"]["mlflow.data.context"] == "training"
    assert contexts["quickstart-validation"]["deeprig.num_rows"] == "359"
    assert "load_digits" in inputs["quickstart-train"].dataset.source
    assert any(key.startswith("system/") for key in run.data.metrics)


@pytest.fixture(scope="module")
def parquet_gru(tmp_path_factory, digits_parquet, ray_2_cpus):
    """parquet_digits_gru.yaml streamed through Ray Data, registered as digits-gru: (a client
    on its store, its one MLflow run)."""
    home = fresh_home(tmp_path_factory, "parquet")
    with deeprig_home_at(home):
        result = run_cli(
            str(JOBS / "parquet_digits_gru.yaml"),
            "--set",
            f"data.path={digits_parquet}",
            "--set",
            "optim.num_epochs=3",
            "--set",
            "data.cache=stream",  # the streaming path; the in-memory one is the quickstart's
            "--set",
            "tracking.register_as=digits-gru",
        )
    assert result.exit_code == 0, result.output
    client = embedded_store_client(home)
    return client, only_run(client, "parquet")


def test_parquet_data_through_ray_data_trains_a_gru(parquet_gru):
    _, run = parquet_gru
    assert run.info.status == "FINISHED"
    assert run.data.metrics["val_accuracy"] > 0.5


def test_the_gru_trained_on_parquet_data_is_registered(parquet_gru):
    client, run = parquet_gru
    versions = client.search_model_versions("name='digits-gru'")
    assert [v.run_id for v in versions] == [run.info.run_id]


@pytest.fixture(scope="module")
def failed_job(tmp_path_factory, ray_2_cpus):
    """Ragged rows pass the schema check but break batching inside Ray Data mid-job: (the
    CLI's result, a client on the job's store)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path_factory.mktemp("ragged")
    rows = [[0.1] * 4 if i % 50 else [0.1] * 3 for i in range(1, 201)]
    path = folder / "ragged.parquet"
    pq.write_table(
        pa.table({"x": pa.array(rows), "y": pa.array([i % 2 for i in range(200)])}), path
    )
    job = folder / "job.yaml"
    job.write_text(
        "name: ragged\nkind: train\nmodel: {name: mlp}\n"
        f"data: {{source: parquet, path: {path}, features: [x], label: y}}\n"
        "optim: {num_epochs: 2}\n"
    )
    return run_in_fresh_home(tmp_path_factory, "ragged-home", str(job))


def test_failed_job_exits_1(failed_job):
    result, _ = failed_job
    assert result.exit_code == 1, result.output


def test_failed_job_marks_its_run_failed(failed_job):
    _, client = failed_job
    run = only_run(client, "ragged")
    assert run.info.status == "FAILED"
    assert run.data.tags["deeprig.failure"] == "data"


def _train_worker_pids() -> list[int]:
    from ray.util.state import list_actors

    actors = list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
    return [a.pid for a in actors]


@pytest.mark.slow
def test_killed_worker_resumes_from_checkpoint_in_the_same_run(mlflow_client):
    """SIGKILL one DDP worker mid-run: Ray Train restarts the group from the latest
    checkpoint (not epoch 0) and the job finishes in its one MLflow run. (Slow: CI covers
    each part of it elsewhere: a 2-worker group restarted after a worker process died, in
    its one run, in test_train_resume's fsdp job; every epoch logged once after a resume
    from a checkpoint in its one-worker job; a worker SIGKILLed from outside, in
    test_elastic_job.)"""
    epochs = 12
    outcome: dict = {}
    job = threading.Thread(
        target=lambda: outcome.setdefault(
            "result",
            run_cli(
                str(JOBS / "digits_mlp.yaml"),
                "--set",
                f"optim.num_epochs={epochs}",
                "--set",
                "failure.max_failures=1",
                "--set",
                "tracking.experiment=kill",
            ),
        )
    )

    def kill_a_worker_after_epoch_3():
        runs = runs_in(mlflow_client, "kill")
        done = runs[0].data.metrics.get("epoch", 0) if runs else 0
        if done >= 3:
            pids = _train_worker_pids()
            assert len(pids) == 2
            os.kill(pids[1], signal.SIGKILL)
            return done
        return None

    job.start()
    killed_after = poll_until(kill_a_worker_after_epoch_3, timeout_s=180, while_=job.is_alive)
    assert killed_after is not None, "training never reached epoch 3"
    job.join(timeout=240)
    assert not job.is_alive()
    result = outcome["result"]
    assert result.exit_code == 0, result.output

    run = only_run(mlflow_client, "kill")
    assert run.info.status == "FINISHED"
    resumed_from = int(run.data.tags["deeprig.resumed_from_epoch"])
    # Continued from a checkpoint, not from scratch. Rank 0 logs an epoch's metrics just
    # before reporting its checkpoint, so the kill may land between the two: the newest
    # checkpoint can be one epoch behind what MLflow showed.
    assert killed_after - 1 <= resumed_from < epochs
    assert resumed_from >= 2
    steps = sorted(m.step for m in mlflow_client.get_metric_history(run.info.run_id, "epoch"))
    # The epochs trained again after the checkpoint are not logged twice.
    assert steps == list(range(epochs))


@pytest.fixture(scope="module")
def diverging(tmp_path_factory, ray_2_cpus):
    """quickstart's 2 workers on a regression task with SGD at lr 10 (the loss overflows
    within a few steps), `max_failures: 2` (never spent: a divergence is deterministic):
    (the CLI's result, a client on its store, its runs, seconds)."""
    import time

    started = time.perf_counter()
    result, client = run_in_fresh_home(
        tmp_path_factory,
        "diverging",
        str(JOBS / "quickstart.yaml"),
        "--set",
        "data={source: 'builtin:synthetic', num_classes: 0, num_samples: 1024}",
        "--set",
        "model={name: mlp, hidden: [64]}",
        "--set",
        "optim={name: sgd, lr: 10.0, momentum: 0.9, num_epochs: 15, batch_size: 32}",
        "--set",
        "checkpoint={metric: val_loss, mode: min}",
        "--set",
        "failure.max_failures=2",
    )
    return result, client, runs_in(client, "quickstart"), time.perf_counter() - started


def test_a_diverging_job_exits_1_naming_the_step_and_the_fixes(diverging):
    result, _, _, seconds = diverging
    assert result.exit_code == 1, result.output
    block = result.output[result.output.index("job failed (non_finite_loss)") :].splitlines()
    assert len(block) == 4, result.output  # what, where, the fix, the log: no traceback
    assert block[1].startswith("  where: epoch 1, step ")
    assert "optim.lr" in block[2] and "optim.grad_clip_norm" in block[2]
    assert seconds < 120  # both workers stopped at the step: no hang in an all-reduce


def test_a_diverging_jobs_run_is_failed_with_the_reason(diverging):
    _, _, runs, _ = diverging
    (run,) = runs
    assert run.info.status == "FAILED"
    assert run.data.tags["deeprig.failure"] == "non_finite_loss"


def test_early_stopping_ends_a_50_epoch_job_early(quickstart):
    _, _, client, run = quickstart
    assert run.info.status == "FINISHED"
    assert run.data.tags["deeprig.stopped_early"] == "true"
    epochs = sorted(m.step + 1 for m in client.get_metric_history(run.info.run_id, "val_loss"))
    assert epochs == [1, 2, 3, 4]  # every epoch logged, none after the rule stopped it
    assert run.data.tags["deeprig.stopped_at_epoch"] == "4"


def test_early_stopping_keeps_the_best_checkpoint_as_the_model(quickstart):
    _, _, client, run = quickstart
    history = client.get_metric_history(run.info.run_id, "val_loss")
    best = min(history, key=lambda m: m.value)
    assert run.data.tags["deeprig.best_epoch"] == str(best.step + 1)
