"""Shared fixtures and helpers. Fixtures are named after the resources they provide.

What module-scoped job fixtures need too (they cannot use function-scoped fixtures) is a plain
function here, and the fixture is built on it (deeprig_home_at, embedded_store_client)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

REPO = Path(__file__).resolve().parents[1]
JOBS = REPO / "jobs"
# `deeprig ui` (MLflow 3.17's server, one uvicorn worker) answers /health in ~4 s on 2 idle
# CPUs; the margin is for a loaded machine.
UI_START_TIMEOUT_S = 90

T = TypeVar("T")


# --- deeprig's home and its embedded MLflow store ---------------------------------------------


@contextlib.contextmanager
def deeprig_home_at(home: Path) -> Iterator[Path]:
    """DEEPRIG_HOME=`home` in the block: module-scoped jobs cannot use the deeprig_home fixture."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("DEEPRIG_HOME", str(home))
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield home


@pytest.fixture
def deeprig_home(tmp_path: Path) -> Iterator[Path]:
    """An empty deeprig home folder (embedded MLflow store + checkpoints) for one test."""
    with deeprig_home_at(tmp_path / "deeprig-home") as home:
        yield home


def embedded_store_client(home: Path):
    """An MlflowClient on `home`'s embedded store (made if missing), to read what a job recorded."""
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{home / 'mlflow.db'}")


@pytest.fixture
def mlflow_client(deeprig_home: Path):
    """An MlflowClient on the test's embedded store, to read back what a job recorded."""
    return embedded_store_client(deeprig_home)


def runs_in(client, experiment: str, kind: str | None = None) -> list:
    """The runs of `experiment` ([] until it exists); given `kind`, those of that deeprig.kind."""
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id]) if found else []
    return [r for r in runs if kind is None or r.data.tags.get("deeprig.kind") == kind]


def only_run(client, experiment: str):
    """The run of `experiment`: fails unless the job recorded exactly one."""
    runs = runs_in(client, experiment)
    assert len(runs) == 1, f"expected exactly one MLflow run, found {len(runs)}"
    return runs[0]


def poll_until(
    condition: Callable[[], T],
    timeout_s: float,
    every_s: float = 0.5,
    while_: Callable[[], bool] | None = None,
) -> T | None:
    """condition()'s first truthy value, to wait on MLflow; None at timeout or once not while_()."""
    deadline = time.monotonic() + timeout_s
    while True:
        going_on = while_ is None or while_()  # read first: one more check after it ended
        if found := condition():
            return found
        if not going_on or time.monotonic() >= deadline:
            return None
        time.sleep(every_s)


# --- processes and ports ------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, for a server a test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def live_group_members(pgid: int) -> list[str]:
    """`pid command line` of each process of group `pgid` still alive (zombies excluded)."""
    members = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            stat = (proc / "stat").read_text()
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # exited while we looked
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces, so split after its last ')'
        state, _ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            members.append(f"{proc.name} {command.strip()[:200]}")
    return members


# --- the tracking UI --------------------------------------------------------------------------


class TrackingUi:
    """`deeprig ui` running as a subprocess in its own process group (the MLflow server it
    execs into and the uvicorn workers that server starts)."""

    def __init__(self, port: int, log: Path):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                # The installed console script: the CLI a user runs.
                [str(Path(sys.executable).with_name("deeprig")), "ui", "--port", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group, so stop() reaches every worker
            )
        self.pgid = self.process.pid

    def wait_healthy(self, timeout_s: float = UI_START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"`deeprig ui` exited with {self.process.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        pytest.fail(f"the UI was not healthy after {timeout_s} s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> list[str]:
        """SIGTERM the whole group (SIGKILL after 30 s); returns what is still alive 10 s
        after the server exited (nothing, for a clean stop)."""
        if self.process.poll() is None:
            try:
                os.killpg(self.pgid, signal.SIGTERM)
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.pgid, signal.SIGKILL)
                self.process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while (left := live_group_members(self.pgid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        return left


@pytest.fixture
def tracking_ui(deeprig_home: Path, tmp_path: Path) -> Iterator[TrackingUi]:
    """`deeprig ui --port <free port>` over the test's deeprig home, healthy; stopped after
    the test (the test may stop it itself to check the stop)."""
    ui = TrackingUi(free_port(), tmp_path / "deeprig-ui.log")
    try:
        ui.wait_healthy()
        yield ui
    finally:
        for member in ui.stop():  # whatever a failed test left: never leak a server
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(member.split()[0]), signal.SIGKILL)


# --- the repository's scripts and data --------------------------------------------------------


def module_from_file(name: str, path: Path):
    """The script at `path` imported as module `name`: jobs/ and deploy/ are not packages."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def digits_parquet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scikit-learn's digits as Parquet, made the way jobs/ documents it."""
    module = module_from_file("make_digits", JOBS / "make_digits_parquet.py")
    return module.write_digits_parquet(tmp_path_factory.mktemp("data") / "digits.parquet")


# Where Debian's dataset-fashion-mnist puts the idx files: the script's own constant.
FASHION_SOURCE: Path = module_from_file("make_fashion", JOBS / "make_fashion_images.py").SOURCE


@pytest.fixture(scope="session")
def example_data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding jobs/data/ the way `make data` writes it, so that a job whose data
    path is `jobs/data/...` validates as written with this folder as the working directory.
    Fashion-MNIST is cut to 25 images a class per split (when its Debian package is here),
    the spoken words to one voice a split (when espeak-ng is)."""
    root = tmp_path_factory.mktemp("example-data")
    data = root / "jobs" / "data"
    data.mkdir(parents=True)
    module_from_file("make_digits", JOBS / "make_digits_parquet.py").write_digits_parquet(
        data / "digits.parquet"
    )
    module_from_file("make_reviews", JOBS / "make_reviews_csv.py").write_reviews_csv(
        data / "reviews.csv"
    )
    module_from_file("make_co2", JOBS / "make_co2_csv.py").write_co2_csv(data / "co2.csv")
    module_from_file("make_stdlib", JOBS / "make_stdlib_corpus.py").write_stdlib_csv(
        data / "stdlib.csv"
    )
    if FASHION_SOURCE.is_dir():
        fashion = module_from_file("make_fashion", JOBS / "make_fashion_images.py")
        fashion.write_fashion_folders(data / "fashion", per_class=25)
    if shutil.which("espeak-ng"):  # one voice a split, one take: 24 clips
        speech = module_from_file("make_speech", JOBS / "make_speech_wavs.py")
        speech.write_speech(data / "speech", takes=1, voices=1)
    return root
