"""Shared fixtures of the unit tests: what the cluster configs and the deploy manifests are
checked against (the lock's versions, the project's metadata), and a user's module with
real frames (failure classification)."""

from __future__ import annotations

import tomllib
from collections.abc import Callable

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="session")
def lock_pins() -> dict[str, str]:
    """requirements.lock as name -> version: every Ray/torch/MLflow version a file names is this."""
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        name, sep, pinned = line.partition("==")
        if sep and not line.startswith("#"):
            pins[name.strip().lower()] = pinned.strip()
    return pins


@pytest.fixture(scope="session")
def project_metadata() -> dict:
    """pyproject.toml's [project] table: the version and Python the image and configs follow."""
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


@pytest.fixture(scope="session")
def deeprig_image(project_metadata: dict) -> Callable[..., str]:
    """deeprig_image(gpu=False): the image deploy/Dockerfile builds, which every node must run."""

    def image(gpu: bool = False) -> str:
        return f"ghcr.io/deeprig/deeprig:{project_metadata['version']}" + ("-gpu" if gpu else "")

    return image


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module of the user's own (`userloop.py`, imported from its own folder) whose
    `train(config)` calls `check_labels`, which raises ValueError: real frames in a file
    that is not deeprig's."""
    import importlib
    import sys

    (tmp_path / "userloop.py").write_text(
        "def train(config):\n"
        "    for epoch in range(3):\n"
        "        check_labels(epoch)\n"
        "\n"
        "\n"
        "def check_labels(epoch):\n"
        "    if epoch == 2:\n"
        "        raise ValueError(f'labels out of range at epoch {epoch}')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "userloop", raising=False)
    return importlib.import_module("userloop")
