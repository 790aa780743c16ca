"""The ready jobs reach their targets with 2 workers on a 2-CPU machine, each in under
3 minutes (slow: `make test-slow`), and the GPU path where a GPU exists."""

from __future__ import annotations

import time

import pytest
import torch
from deeprig.cli import app
from typer.testing import CliRunner

from tests.conftest import JOBS, only_run

pytestmark = pytest.mark.usefixtures("ray_2_cpus")


def best_accuracy(client, experiment: str) -> float:
    run = only_run(client, experiment)
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    return max(m.value for m in history)


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("job", "target"),
    [("digits_mlp.yaml", 0.95), ("digits_cnn.yaml", 0.97), ("digits_lstm.yaml", 0.95)],
)
def test_ready_job_reaches_its_accuracy_with_2_workers(job, target, mlflow_client):
    started = time.perf_counter()
    result = CliRunner().invoke(app, ["run", str(JOBS / job), "--set", "tracking.experiment=t"])
    seconds = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    accuracy = best_accuracy(mlflow_client, "t")
    print(f"{job}: val_accuracy {accuracy:.4f} in {seconds:.1f} s")
    assert accuracy >= target
    assert seconds < 180


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_worker_trains_with_mixed_precision(mlflow_client):
    result = CliRunner().invoke(
        app,
        [
            "run",
            str(JOBS / "digits_cnn.yaml"),
            "--set",
            "scaling.use_gpu=true",
            "--set",
            "scaling.num_workers=1",
            "--set",
            "optim.num_epochs=5",
            "--set",
            "tracking.experiment=gpu",
        ],
    )
    assert result.exit_code == 0, result.output
    assert best_accuracy(mlflow_client, "gpu") > 0.9
