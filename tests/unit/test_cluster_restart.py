"""`deeprig cluster restart tracking` on a cluster's recorded state, no Ray: the tracking
server's process group is stopped and started again on its port (one that is gone is
only started), the rest of the cluster left running. The server here is a stand-in that
answers /health (Python's http.server): MLflow's own start is the slow e2e module's."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from deeprig.cli import app
from deeprig.cluster import tracking_server
from deeprig.cluster.local import find_cluster
from deeprig.cluster.processes import group_alive
from deeprig.cluster.state import LocalCluster, state_file
from typer.testing import CliRunner

from tests.conftest import free_port


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    """A cluster's state: its head a process group that runs, its tracking server one that
    serves /health on its port; every group killed after the test."""
    home = tmp_path / "home"
    monkeypatch.setenv("DEEPRIG_HOME", str(home))
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # (no Ray token to make for a server)
    served = tmp_path / "served"
    served.mkdir()
    (served / "health").write_text("OK")

    def stand_in(home: Path, host: str, port: int) -> list[str]:
        return [sys.executable, "-m", "http.server", str(port), "-b", host, "-d", str(served)]

    monkeypatch.setattr(tracking_server, "server_command", stand_in)
    head = subprocess.Popen(["sleep", "300"], start_new_session=True)
    state = LocalCluster(
        dashboard="http://127.0.0.1:1",
        gcs_address="127.0.0.1:1",
        tracking_uri=f"http://127.0.0.1:{free_port()}",
        storage=str(tmp_path / "storage"),
        temp_dir=str(tmp_path / "ray"),
        workers=0,
        cpus_per_node=1,
        process_groups={"head": head.pid, "mlflow": head.pid + 10**6},  # (no such group)
        logs=str(tmp_path / "logs"),
    )
    (tmp_path / "logs").mkdir()
    state.save(state_file(home))
    yield home
    for pgid in {head.pid, *find_cluster(home).process_groups.values()}:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    head.wait()


def restart() -> tuple[int, str]:
    result = CliRunner().invoke(app, ["cluster", "restart", "tracking", "--timeout-s", "30"])
    return result.exit_code, result.output


def test_a_gone_server_is_started_and_a_running_one_restarted_on_its_port(cluster):
    from deeprig.cluster.tracking_server import tracking_healthy

    code, output = restart()
    assert code == 0 and "gone" in output, output
    first = find_cluster(cluster).process_groups["mlflow"]
    assert group_alive(first) and tracking_healthy(find_cluster(cluster).tracking_uri)

    code, output = restart()
    assert code == 0 and "stopping" in output, output
    state = find_cluster(cluster)
    second = state.process_groups["mlflow"]
    assert second != first and not group_alive(first) and group_alive(second)
    assert tracking_healthy(state.tracking_uri)
    assert group_alive(state.process_groups["head"]), "the rest of the cluster was stopped"


def test_without_a_cluster_it_says_so_and_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPRIG_HOME", str(tmp_path))
    code, output = restart()
    assert code == 1 and "no cluster is up" in output
