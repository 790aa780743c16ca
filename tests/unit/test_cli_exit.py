"""The `deeprig` console script ends with `os._exit` (no interpreter teardown): what it
printed must still arrive, and its exit code must be the command's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    # stdout a pipe, not a terminal: block-buffered, so an exit that skipped the flush
    # would lose it
    return subprocess.run(
        [sys.executable, "-m", "deeprig.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_valid_spec_exits_0_with_its_summary_printed():
    done = run_cli("validate", "jobs/quickstart.yaml")
    assert done.returncode == 0, done.stderr
    assert "1438 train rows" in done.stdout


def test_a_bad_spec_exits_2_with_its_problem_printed():
    done = run_cli("validate", "jobs/quickstart.yaml", "--set", "optim.lr=-1")
    assert done.returncode == 2
    assert "optim.lr: must be > 0.0 (got -1)" in done.stdout + done.stderr
