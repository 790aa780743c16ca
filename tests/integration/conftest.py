"""Resources of the integration tests: a real local Ray, shared by the session (start-up is
~3 s), and `deeprig run` drivers that die mid-job."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import deeprig_home_at, embedded_store_client, poll_until


def fresh_home(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A deeprig home of its own whose MLflow store is empty: a copy of one that MLflow
    made once for the session (a new SQLite store runs its ~2 s of migrations, on the CPUs
    the job's workers start on)."""
    template = tmp_path_factory.getbasetemp() / "empty-store" / "mlflow.db"
    if not template.exists():
        template.parent.mkdir()
        embedded_store_client(template.parent).search_experiments()  # MLflow makes it
    home = tmp_path_factory.mktemp(name) / "deeprig-home"
    home.mkdir()
    shutil.copyfile(template, home / "mlflow.db")
    return home


def run_in_fresh_home(tmp_path_factory, name: str, *args: str):
    """`deeprig run ARGS` in this process, in a deeprig home of its own: (the CLI's result,
    a client on that home's store). Module fixtures run their job once with it."""
    from deeprig.cli import app
    from typer.testing import CliRunner

    home = fresh_home(tmp_path_factory, name)
    with deeprig_home_at(home):
        result = CliRunner().invoke(app, ["run", *args], catch_exceptions=False)
    return result, embedded_store_client(home)


@pytest.fixture(scope="session")
def ray_2_cpus():
    """A local Ray cluster with 2 CPUs, started the way deeprig starts one, but with its
    dashboard: Ray's state API (`ray.util.state.list_actors`, with which the worker-kill and
    env-runner-crash tests find the actor they kill) is served by the dashboard."""
    from deeprig.cluster.session import ray_session

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("DEEPRIG_RAY_DASHBOARD", "1")
        with ray_session(num_cpus=2):
            yield


@pytest.fixture
def driver_killed_once(deeprig_home: Path, mlflow_client):
    """`deeprig run` as its own process, SIGKILLed once MLflow shows X: what --resume tests need."""
    # Returns what mlflow_shows() returned (None: not before timeout_s, or the driver ended
    # first). mlflow_client has made the store's tables: the driver and the test do not race.

    def run(
        job: str,
        settings: list[str],
        mlflow_shows: Callable[[], object],
        timeout_s: float,
        every_s: float,
    ):
        driver = subprocess.Popen(
            [sys.executable, "-m", "deeprig.cli", "run", job, *settings],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # so that it can be killed outright, workers and all
            env=dict(os.environ, DEEPRIG_HOME=str(deeprig_home)),
        )
        try:
            return poll_until(
                mlflow_shows, timeout_s, every_s, while_=lambda: driver.poll() is None
            )
        finally:
            with contextlib.suppress(ProcessLookupError):  # it may have ended by itself
                os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)

    return run
