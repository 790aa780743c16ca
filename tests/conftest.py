"""Shared fixtures. Fixtures are named after the resources they provide."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
JOBS = REPO / "jobs"


@pytest.fixture
def deeprig_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty deeprig home folder (embedded MLflow store + checkpoints) for one test."""
    home = tmp_path / "deeprig-home"
    monkeypatch.setenv("DEEPRIG_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return home


@pytest.fixture(scope="session")
def digits_parquet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scikit-learn's digits as Parquet, made the way jobs/ documents it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_digits", JOBS / "make_digits_parquet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_digits_parquet(tmp_path_factory.mktemp("data") / "digits.parquet")
