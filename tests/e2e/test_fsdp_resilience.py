"""A 2-worker fsdp job through what a long job meets, each `deeprig run` its own process on
its own local Ray: gradient accumulation, clipping over the shards and early stopping in
one job whose driver is SIGKILLed mid-run, then `--resume`d in the same MLflow run from
its sharded checkpoint (after a `--resume` with a changed model is refused, exit 2); and a
diverging fsdp job stopped by the NaN guard. Slow (96 s on 2 CPUs): `pytest -m slow`."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import JOBS, REPO, embedded_store_client, only_run, poll_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

PATIENCE = 10  # epochs without a val_loss 10 lower: the job stops at its 11th epoch
FSDP_JOB = [
    str(JOBS / "digits_mlp.yaml"),
    *("--set", "scaling.strategy=fsdp", "--set", "scaling.num_workers=2"),
    *("--set", "optim.num_epochs=40", "--set", "optim.batch_size=16"),
    *("--set", "optim.accumulate_steps=2", "--set", "optim.grad_clip_norm=0.5"),
    *("--set", f"early_stopping={{metric: val_loss, patience: {PATIENCE}, min_delta: 10}}"),
    *("--set", "checkpoint={metric: epoch, mode: max, num_to_keep: 1}"),
    *("--set", "tracking.experiment=fsdp-resume"),
]


def deeprig_run(home: Path, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deeprig.cli", "run", *args],
        cwd=REPO,
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, "DEEPRIG_HOME": str(home), "COLUMNS": "200"}


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """The fsdp job's driver killed once 3 epochs are logged; a --resume with a narrower
    model; the --resume as trained: (client, run id killed, the refused, the resumed)."""
    home = tmp_path_factory.mktemp("fsdp-resume") / "deeprig-home"
    client = embedded_store_client(home)
    client.search_experiments()  # (the store's tables made: the driver and we do not race)

    def three_epochs_logged():
        found = client.get_experiment_by_name("fsdp-resume")
        runs = client.search_runs([found.experiment_id]) if found else []
        return runs[0] if runs and runs[0].data.metrics.get("epoch", 0) >= 3 else None

    driver = subprocess.Popen(
        [sys.executable, "-m", "deeprig.cli", "run", *FSDP_JOB],
        cwd=REPO,
        env=_env(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # killed outright, its Ray and workers with it
    )
    try:
        killed = poll_until(three_epochs_logged, 300, 0.5, while_=lambda: driver.poll() is None)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    assert killed is not None, "the fsdp job never logged 3 epochs"
    refused = deeprig_run(home, *FSDP_JOB, "--set", "model.hidden=[64]", "--resume")
    resumed = deeprig_run(home, *FSDP_JOB, "--resume")
    return client, killed.info.run_id, refused, resumed


def test_a_resume_with_another_model_shape_exits_2_before_ray_starts(killed_and_resumed):
    _, _, refused, _ = killed_and_resumed
    output = " ".join((refused.stdout + refused.stderr).split())
    assert refused.returncode == 2, output
    assert "model.hidden:" in output and "set it back to [256, 128]" in output, output
    assert "starting Ray" not in output


def test_a_killed_fsdp_driver_resumes_its_run_from_the_sharded_checkpoint(killed_and_resumed):
    from deeprig.training.state import TrainState

    client, killed_id, _, resumed = killed_and_resumed
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    run = only_run(client, "fsdp-resume")  # the same run: none created
    assert run.info.run_id == killed_id and run.info.status == "FINISHED"
    assert 3 <= int(run.data.tags["deeprig.resumed_from_epoch"]) <= PATIENCE
    state = TrainState.load(run.data.tags["deeprig.checkpoint_path"])
    assert state.sharded
    shards = Path(run.data.tags["deeprig.checkpoint_path"]) / "shards"
    assert {p.name for p in shards.iterdir()} == {".metadata", "__0_0.distcp", "__1_0.distcp"}


def test_early_stopping_counts_its_patience_across_the_resume(killed_and_resumed):
    client, _, _, _ = killed_and_resumed
    run = only_run(client, "fsdp-resume")
    assert run.data.tags["deeprig.stopped_early"] == "true"
    assert run.data.tags["deeprig.stopped_at_epoch"] == str(PATIENCE + 1)
    for key in ("epoch", "val_loss", "train_loss"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert sorted(steps) == list(range(PATIENCE + 1)), key  # every epoch exactly once
    # accumulation: 2 micro-batches of 16 rows on each of 2 workers make a step
    assert run.data.params["effective_batch_size"] == "64"
    assert run.data.params["optim.grad_clip_norm"] == "0.5"
    assert run.data.metrics["val_accuracy"] > 0.8  # it trained, clipped, on its shards


def test_a_diverging_fsdp_job_exits_1_as_non_finite_loss(tmp_path_factory):
    home = tmp_path_factory.mktemp("fsdp-nan") / "deeprig-home"
    result = deeprig_run(
        home,
        str(JOBS / "quickstart.yaml"),
        *("--set", "scaling.strategy=fsdp"),
        *("--set", "data={source: 'builtin:synthetic', num_classes: 0, num_samples: 1024}"),
        *("--set", "model={name: mlp, hidden: [64]}"),
        *("--set", "optim={name: sgd, lr: 10.0, momentum: 0.9, num_epochs: 15, batch_size: 32}"),
        *("--set", "checkpoint={metric: val_loss, mode: min}"),
        *("--set", "failure.max_failures=2"),
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "job failed (non_finite_loss)" in output, output
    run = only_run(embedded_store_client(home), "quickstart")
    assert run.info.status == "FAILED"
    assert run.data.tags["deeprig.failure"] == "non_finite_loss"
    assert run.data.params["scaling.strategy"] == "fsdp"
