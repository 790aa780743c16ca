"""A real local Ray for the integration tests, shared by the session (start-up is ~3 s)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_2_cpus():
    """A local Ray cluster with 2 CPUs, started the way deeprig starts one."""
    from deeprig.cluster.session import ray_session

    with ray_session(num_cpus=2):
        yield
