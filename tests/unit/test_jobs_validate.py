"""Every YAML under jobs/ is a valid spec (habit 8)."""

from __future__ import annotations

import shutil

import pytest
from deeprig.cli import app
from typer.testing import CliRunner

from tests.conftest import FASHION_SOURCE, JOBS

JOB_FILES = sorted(JOBS.glob("*.yaml"))


def test_there_are_ready_jobs():
    names = {p.name for p in JOB_FILES}
    assert {"quickstart.yaml", "digits_mlp.yaml", "digits_cnn.yaml", "digits_lstm.yaml"} <= names


@pytest.mark.parametrize("job", JOB_FILES, ids=lambda p: p.name)
def test_job_validates(job, deeprig_home, example_data_root, monkeypatch):
    text = job.read_text()
    assert text.startswith("#"), "each job starts with a how-to-run / expected-result comment"
    if "jobs/data/fashion" in text and not FASHION_SOURCE.is_dir():
        pytest.skip("apt-get install dataset-fashion-mnist (CI installs it)")
    if "jobs/data/speech" in text and shutil.which("espeak-ng") is None:
        pytest.skip("apt-get install espeak-ng (CI installs it)")
    monkeypatch.chdir(example_data_root)  # its jobs/data/ is what `make data` writes
    result = CliRunner().invoke(app, ["validate", str(job)])
    assert result.exit_code == 0, result.output
