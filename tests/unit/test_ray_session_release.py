"""`release_ray` shuts down only a Ray that the job's own `ray_session` started: never one
it found running, even when an outer `ray_session` of the same process (the test suite's)
started that one."""

from __future__ import annotations

import pytest
import ray
from deeprig.cluster import session


def test_a_job_inside_an_outer_session_leaves_its_ray_up(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(session, "_owned", True)  # as the outer session that started Ray
    monkeypatch.setattr(session, "_release", None)
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    shutdowns = []
    monkeypatch.setattr(ray, "shutdown", lambda: shutdowns.append(1))
    with session.ray_session(num_cpus=2):
        session.release_ray()  # what a train job calls once its results are in
        assert session._release is None
    assert shutdowns == []
    assert session._owned  # the outer session still owns its Ray, and shuts it down itself
