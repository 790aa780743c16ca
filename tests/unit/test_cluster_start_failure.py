"""A cluster process that dies during `deeprig cluster up` is reported at once, with the
last thing it said, not after the start-up timeout: `cluster up` is its parent and has not
reaped it yet, so it lingers as a zombie that still answers signal 0."""

from __future__ import annotations

import sys
import time

import pytest
from deeprig.cluster.local import ClusterError, _wait_until_ready
from deeprig.cluster.processes import group_alive, spawn
from deeprig.cluster.state import LocalCluster


def test_a_head_that_dies_at_once_fails_the_start_naming_its_reason(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    said = "ValueError: port 16379 is used by other components"
    head = spawn(
        [sys.executable, "-c", f"print({said!r}); raise SystemExit(1)"], logs / "head.log", {}
    )
    cluster = LocalCluster(
        dashboard="http://127.0.0.1:1",  # (nothing answers: the wait would go on)
        gcs_address="127.0.0.1:1",
        tracking_uri="http://127.0.0.1:1",
        storage=str(tmp_path / "storage"),
        temp_dir=str(tmp_path / "ray"),
        workers=0,
        cpus_per_node=1,
        process_groups={"head": head},
        logs=str(logs),
    )
    started = time.monotonic()
    with pytest.raises(ClusterError) as failed:
        _wait_until_ready(cluster, 1, timeout_s=60)
    assert time.monotonic() - started < 20
    assert "head exited during start-up" in str(failed.value) and said in str(failed.value)
    assert not group_alive(head)  # a zombie: exited, not yet reaped by this process
