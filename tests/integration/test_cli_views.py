"""`deeprig runs` and `deeprig ui` over a store that holds a run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from deeprig.cli import app
from deeprig.tracking.runs import RunRecorder
from deeprig.tracking.store import embedded_target
from mlflow import MlflowClient
from typer.testing import CliRunner


@pytest.fixture
def store_with_a_run(deeprig_home, tmp_path):
    target = embedded_target(deeprig_home)
    spec = {"name": "view-me", "kind": "train", "optim": {"lr": 0.1}}
    recorder = RunRecorder.create(target, "views", spec, "name: view-me\n", tmp_path)
    MlflowClient(target.uri).log_metric(recorder.run_id, "val_accuracy", 0.875, step=0)
    recorder.finish("FINISHED")
    return recorder.run_id


def test_runs_lists_the_run_with_its_key_metric(store_with_a_run):
    result = CliRunner().invoke(app, ["runs"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    line = next(row for row in result.output.splitlines() if store_with_a_run[:12] in row)
    assert "view-me" in line and "FINISHED" in line and "0.875" in line


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(120)
def test_ui_serves_the_mlflow_ui_on_localhost(store_with_a_run, deeprig_home):
    port = free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "deeprig.cli", "ui", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the UI never became healthy")
        client = MlflowClient(f"http://127.0.0.1:{port}")
        run = client.get_run(store_with_a_run)  # the UI's API serves the configured store
        assert run.data.metrics["val_accuracy"] == 0.875
    finally:
        os.killpg(ui.pid, signal.SIGTERM)  # the server and any workers it started
        ui.wait(timeout=30)
    time.sleep(1)
    leftovers = subprocess.run(["pgrep", "-f", f"--port {port}"], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", "the UI left a process behind"
