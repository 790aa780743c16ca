"""What the unit tests of the cluster configs and the deploy manifests check those files
against: the lock's versions and the project's metadata."""

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
