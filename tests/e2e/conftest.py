"""Resources of the end-to-end tests: the tracking UI as `deeprig ui` serves it, a headless
browser, and a folder for what a test leaves to look at (screenshots)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Debian's chromium (CI installs it with apt): Playwright drives it as it is, so nothing is
# downloaded at test time (`playwright install` is not needed).
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS_ENV = "DEEPRIG_TEST_ARTIFACTS"
# MLflow 3.17's server (4 uvicorn workers) needs ~12 s on a 2-CPU machine to answer /health.
UI_START_TIMEOUT_S = 90


def free_port() -> int:
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


@pytest.fixture
def chromium_page():
    """A page of headless Debian chromium driven by Playwright. Skips where chromium is not
    installed (CI installs it, so there it runs)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 900})
        finally:
            browser.close()


@pytest.fixture
def test_artifacts() -> Path:
    """Where tests leave files to look at: $DEEPRIG_TEST_ARTIFACTS, else tests/e2e/artifacts/
    (git-ignored)."""
    folder = Path(os.environ.get(ARTIFACTS_ENV) or REPO / "tests" / "e2e" / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
