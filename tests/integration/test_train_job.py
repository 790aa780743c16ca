"""`deeprig run` on a real local Ray (2 CPUs) with a real MLflow store."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from deeprig.cli import app
from mlflow import MlflowClient
from typer.testing import CliRunner

from tests.conftest import JOBS

pytestmark = pytest.mark.usefixtures("ray_2_cpus")


def run_cli(*args: str):
    return CliRunner().invoke(app, ["run", *args], catch_exceptions=False)


def only_run(home: Path, experiment: str):
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1, f"expected exactly one MLflow run, found {len(runs)}"
    return client, runs[0]


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found.add(item.path)
        if item.is_dir:
            found |= artifact_paths(client, run_id, item.path)
    return found


def test_quickstart_trains_two_workers_and_records_one_mlflow_run(deeprig_home):
    result = run_cli(str(JOBS / "quickstart.yaml"), "--set", "optim.num_epochs=4")
    assert result.exit_code == 0, result.output
    client, run = only_run(deeprig_home, "quickstart")
    assert run.info.status == "FINISHED"
    assert run.info.run_id in result.output  # the user is told which run it was

    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert sorted(m.step for m in history) == [0, 1, 2, 3]
    assert max(m.value for m in history) > 0.85  # 4 epochs of an MLP on digits
    for key in ("train_loss", "val_loss", "epoch_time_s", "samples_per_s"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 4

    params = run.data.params
    assert params["model.name"] == "mlp" and params["scaling.num_workers"] == "2"
    assert params["optim.num_epochs"] == "4"  # the --set override is what was recorded
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

    mlflow.set_tracking_uri(f"sqlite:///{deeprig_home / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    assert model.metadata.signature is not None
    import numpy as np

    assert model.predict(np.zeros((3, 8, 8), dtype=np.float32)).shape == (3, 10)


def test_parquet_data_through_ray_data_trains_a_gru_and_registers_it(deeprig_home, digits_parquet):
    result = run_cli(
        str(JOBS / "parquet_digits_gru.yaml"),
        "--set",
        f"data.path={digits_parquet}",
        "--set",
        "optim.num_epochs=3",
        "--set",
        "data.cache=stream",  # the streaming path; the in-memory one is above
        "--set",
        "tracking.register_as=digits-gru",
    )
    assert result.exit_code == 0, result.output
    client, run = only_run(deeprig_home, "parquet")
    assert run.info.status == "FINISHED"
    assert run.data.metrics["val_accuracy"] > 0.5
    versions = client.search_model_versions("name='digits-gru'")
    assert [v.run_id for v in versions] == [run.info.run_id]


def test_failed_job_exits_1_and_marks_its_run_failed(deeprig_home, tmp_path):
    """Ragged rows pass the schema check but break batching inside Ray Data mid-job."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [[0.1] * 4 if i % 50 else [0.1] * 3 for i in range(1, 201)]
    path = tmp_path / "ragged.parquet"
    pq.write_table(
        pa.table({"x": pa.array(rows), "y": pa.array([i % 2 for i in range(200)])}), path
    )
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: ragged\nkind: train\nmodel: {name: mlp}\n"
        f"data: {{source: parquet, path: {path}, features: [x], label: y}}\n"
        "optim: {num_epochs: 2}\n"
    )
    result = run_cli(str(job))
    assert result.exit_code == 1, result.output
    _, run = only_run(deeprig_home, "ragged")
    assert run.info.status == "FAILED"


def _train_worker_pids() -> list[int]:
    from ray.util.state import list_actors

    actors = list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
    return [a.pid for a in actors]


def test_killed_worker_resumes_from_checkpoint_in_the_same_run(deeprig_home):
    """SIGKILL one DDP worker mid-run: Ray Train restarts the group from the latest
    checkpoint (not epoch 0) and the job finishes in its one MLflow run."""
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
    job.start()
    db = deeprig_home / "mlflow.db"
    deadline = time.time() + 180
    killed_after = None
    while time.time() < deadline and killed_after is None:
        time.sleep(0.5)
        if not db.exists():
            continue
        client = MlflowClient(f"sqlite:///{db}")
        exp = client.get_experiment_by_name("kill")
        runs = client.search_runs([exp.experiment_id]) if exp else []
        done = runs[0].data.metrics.get("epoch", 0) if runs else 0
        if done >= 3:
            pids = _train_worker_pids()
            assert len(pids) == 2
            os.kill(pids[1], signal.SIGKILL)
            killed_after = done
    assert killed_after is not None, "training never reached epoch 3"
    job.join(timeout=240)
    assert not job.is_alive()
    result = outcome["result"]
    assert result.exit_code == 0, result.output

    client, run = only_run(deeprig_home, "kill")
    assert run.info.status == "FINISHED"
    resumed_from = int(run.data.tags["deeprig.resumed_from_epoch"])
    # Continued from a checkpoint, not from scratch. Rank 0 logs an epoch's metrics just
    # before reporting its checkpoint, so the kill may land between the two: the newest
    # checkpoint can be one epoch behind what MLflow showed.
    assert killed_after - 1 <= resumed_from < epochs
    assert resumed_from >= 2
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "epoch"))
    assert steps.count(0) == 1  # epoch 0 was never trained twice
    assert set(steps) == set(range(epochs))
