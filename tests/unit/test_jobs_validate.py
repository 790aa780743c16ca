"""Every YAML under jobs/ is a valid spec (habit 8)."""

from __future__ import annotations

import pytest
from deeprig.cli import app
from typer.testing import CliRunner

from tests.conftest import JOBS

JOB_FILES = sorted(JOBS.glob("*.yaml"))


def test_there_are_ready_jobs():
    names = {p.name for p in JOB_FILES}
    assert {"quickstart.yaml", "digits_mlp.yaml", "digits_cnn.yaml", "digits_lstm.yaml"} <= names


@pytest.mark.parametrize("job", JOB_FILES, ids=lambda p: p.name)
def test_job_validates(job, deeprig_home, digits_parquet):
    text = job.read_text()
    assert text.startswith("#"), "each job starts with a how-to-run / expected-result comment"
    overrides = ["data.path=" + str(digits_parquet)] if "source: parquet" in text else []
    args = ["validate", str(job), *[a for o in overrides for a in ("--set", o)]]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
