"""The cluster's MLflow tracking server: its command, its store, its start (behind MLflow's
basic auth unless the cluster runs without), its health, its process, and the jobs user
that jobs record as. `cluster/local.py` decides when it starts or starts again."""

from __future__ import annotations

import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from deeprig.cluster.processes import group_processes, in_group, spawn
from deeprig.cluster.state import LocalCluster
from deeprig.tracking.store import deeprig_home, private_file, private_folder

ROLE = "mlflow"  # its process group's role in the cluster's state


@dataclass(frozen=True)
class TrackingStore:
    """Where the cluster's tracking server keeps runs and (proxied) artifacts: readable
    from disk after the server is gone."""

    database: Path
    artifacts: Path

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.database}"


def tracking_store(home: Path | None = None) -> TrackingStore:
    root = (home or deeprig_home()) / "cluster"
    return TrackingStore(root / "mlflow.db", root / "mlartifacts")


def start_tracking(
    cluster: LocalCluster, home: Path, host: str, port: int, env: dict[str, str], say
) -> None:
    """`mlflow server` on `host:port` over the home's store, its process group recorded
    on `cluster` (returns at once: `wait_until_healthy`)."""
    from deeprig.tracking.auth import (
        ServerCredentials,
        auth_folder,
        credentials_file,
        record_server_uri,
        server_env,
    )

    command = server_command(home, host, port)
    server = dict(env, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    if cluster.auth:
        folder = auth_folder(home)
        server |= server_env(folder, ServerCredentials.load_or_create(folder))
        record_server_uri(folder, cluster.tracking_uri)
        command += ["--app-name", "basic-auth"]
        say(
            f"MLflow tracking server on {cluster.tracking_uri}, behind MLflow's basic auth "
            f"(users' passwords: {credentials_file(folder)}, mode 0600)"
        )
    else:
        say(f"MLflow tracking server on {cluster.tracking_uri} (no authentication: loopback)")
    store = tracking_store(home)
    private_folder(store.artifacts)
    if store.database.exists():  # (made before its modes were kept private)
        private_file(store.database)
    cluster.process_groups[ROLE] = spawn(command, Path(cluster.logs) / "mlflow.log", server)


def server_command(home: Path, host: str, port: int) -> list[str]:
    store = tracking_store(home)
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        store.uri,
        "--artifacts-destination",
        str(store.artifacts),
        "--serve-artifacts",
        "--host",
        host,
        "--port",
        str(port),
        # One worker: ~0.5 GiB and ready in ~4 s instead of ~3 GiB and ~10 s (measured).
        "--workers",
        "1",
    ]


def tracking_healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def server_running(cluster: LocalCluster) -> bool:
    """A process of the tracking server's group runs."""
    group = cluster.process_groups.get(ROLE)
    return group is not None and in_group(group_processes([group]), group)


def wait_until_healthy(cluster: LocalCluster, timeout_s: float) -> bool:
    """Until the server answers (True), or its processes are gone or `timeout_s` passed."""
    deadline = time.monotonic() + timeout_s
    while not tracking_healthy(cluster.tracking_uri):
        if time.monotonic() > deadline or not server_running(cluster):
            return False
        time.sleep(0.5)
    return True


def create_jobs_user(cluster: LocalCluster, home: Path) -> None:
    """The user jobs record as, with its password kept in the home's credentials
    (tracking/auth.py's AuthProblem when the server refuses)."""
    from deeprig.tracking.auth import JOBS_USER, ServerCredentials, auth_folder, ensure_user

    credentials = ServerCredentials.load_or_create(auth_folder(home))
    ensure_user(
        cluster.tracking_uri, credentials.admin_password, JOBS_USER, credentials.jobs_password
    )
