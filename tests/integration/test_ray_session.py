"""`release_ray`: a job done with Ray has the Ray it started shut down in the background,
and `ray_session` waits for that at its end. Its own process: the suite's shared Ray
would (rightly) be left alone."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import ray
from deeprig.cluster import session
with session.ray_session(num_cpus=1):
    assert ray.is_initialized()
    session.release_ray()
    session.release_ray()  # idempotent: one shutdown
    shutting_down = session._release
    assert shutting_down is not None and shutting_down.name == "deeprig-ray-shutdown"
assert not shutting_down.is_alive() and not ray.is_initialized()
assert session._release is None
print("released")
"""


def test_release_ray_shuts_the_jobs_own_ray_down_in_the_background():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "released" in done.stdout
