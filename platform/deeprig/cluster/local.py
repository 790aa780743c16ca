"""A real multi-node Ray cluster and an MLflow tracking server on one machine.

`deeprig cluster up` runs Ray's own `ray start` for a head node and N worker nodes (each a
raylet with its own resources) and `mlflow server` with artifacts served through it, all
bound to loopback unless told otherwise. It is a small team's box and the test bed for
job submission. What it started is written to `<deeprig home>/cluster/cluster.json`
(cluster/state.py's `LocalCluster`), so `status` and `down` find it again from another
shell; `down` stops exactly those process groups and their children (never `ray stop`,
which would kill every Ray on the machine). Everything it keeps under the home folder is
its owner's alone (folders 0700, files 0600), and its servers start with a 077 umask, so
what they write is too: the store and the password hashes are read only through the
tracking server's login. The tracking server
itself is cluster/tracking_server.py's; starting and stopping process groups,
cluster/processes.py's.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import uuid
from pathlib import Path

from deeprig.cluster.processes import group_alive, group_processes, spawn, stop
from deeprig.cluster.ray_nodes import is_loopback, loopback_env, ray_start_command
from deeprig.cluster.state import LocalCluster, state_file
from deeprig.cluster.tracking_server import (
    ROLE,
    create_jobs_user,
    server_running,
    start_tracking,
    tracking_healthy,
    wait_until_healthy,
)
from deeprig.tracking.store import deeprig_home, private_folder


class ClusterError(RuntimeError):
    """The cluster could not be brought up or found (the message says why and what to do)."""


def find_cluster(home: Path | None = None) -> LocalCluster | None:
    path = state_file(home)
    return LocalCluster.load(path) if path.exists() else None


def running_cluster(home: Path | None = None) -> LocalCluster | None:
    """The cluster `up` started from this home, while any of its processes runs."""
    cluster = find_cluster(home)
    return cluster if cluster is not None and _alive(cluster) else None


def up(
    workers: int = 1,
    cpus_per_node: float | None = None,
    host: str = "127.0.0.1",
    port: int = 6379,
    dashboard_port: int = 8265,
    tracking_port: int = 5000,
    home: Path | None = None,
    timeout_s: float = 120.0,
    say=print,
    auth: bool = True,
) -> LocalCluster:
    """Start a head node, `workers` worker nodes and an MLflow server (behind MLflow's
    basic auth unless `auth` is off, which only loopback allows); wait until all of them
    answer. On any failure, stops what was started. On a cluster already up, starts again
    only its tracking server when that is gone."""
    if not auth and not is_loopback(host):
        raise OpenToTheNetwork(host)
    home = home or deeprig_home()
    existing = find_cluster(home)
    if existing and _alive(existing):
        if restart_tracking(existing, home, timeout_s, say):
            return existing
        raise ClusterError(
            f"a cluster is already up (dashboard {existing.dashboard}); "
            "`deeprig cluster down` first"
        )
    cpus = cpus_per_node or max(1, (os.cpu_count() or 1) // (workers + 1))
    cluster = _new_cluster(home, host, port, dashboard_port, tracking_port, workers, cpus, auth)
    temp_dir, logs = cluster.temp_dir, Path(cluster.logs)
    env = _node_env(cluster, home)
    try:
        start_tracking(cluster, home, host, tracking_port, env, say)
        say(f"Ray head node on {cluster.gcs_address} (dashboard {cluster.dashboard})")
        head = [
            "--head",
            f"--node-ip-address={host}",
            "--node-name=head",  # (every node of one machine has its address: told by name)
            f"--port={port}",
            f"--dashboard-host={host}",
            f"--dashboard-port={dashboard_port}",
            "--include-dashboard=true",
            f"--temp-dir={temp_dir}",
        ]
        cluster.process_groups["head"] = _ray_start(head, cpus, logs / "head.log", env)
        cluster.save(state_file(home))
        _wait_until_ready(cluster, 1, timeout_s)
        if auth:
            _create_jobs_user(cluster, home)
        # The head writes the cluster's token on first start; nodes joining must show it.
        env = _node_env(cluster, home)
        for index in range(workers):
            say(f"Ray worker node {index + 1} of {workers}")
            _start_worker_node(cluster, index + 1, env)
        cluster.save(state_file(home))
        _wait_until_ready(cluster, workers + 1, timeout_s)
        say(f"ready: {workers + 1} nodes x {cpus:g} CPU")
    except BaseException:
        down(cluster, home)
        raise
    return cluster


def restart_tracking(
    cluster: LocalCluster, home: Path, timeout_s: float, say=print, running_too: bool = False
) -> bool:
    """The cluster's MLflow server started again on its port and store when its processes
    are gone (a crash, a SIGKILL), until it answers; False when it runs. `running_too`:
    one that runs is stopped first (`cluster restart tracking`). Jobs' records kept while
    it was away reach it from their own outboxes (tracking/outbox.py)."""
    running = server_running(cluster)
    if running and running_too:
        say("stopping the tracking server")
        stop(group_processes([cluster.process_groups[ROLE]]), grace_s=10.0)
    elif running or tracking_healthy(cluster.tracking_uri):
        return False
    else:
        say("the tracking server is gone: starting it again on the same port and store")
    host, _, port = cluster.tracking_uri.removeprefix("http://").rpartition(":")
    start_tracking(cluster, home, host, int(port), _node_env(cluster, home), say)
    cluster.save(state_file(home))
    if not wait_until_healthy(cluster, timeout_s):
        raise ClusterError(f"the tracking server did not start; see {cluster.logs}/mlflow.log")
    return True


def add_node(home: Path | None = None, timeout_s: float = 120.0, say=print) -> str:
    """One more worker node joining the running cluster (a lost node's replacement, or room
    for an elastic job to grow into); its role name (`worker-3`)."""
    home = home or deeprig_home()
    cluster = running_cluster(home)
    if cluster is None:
        raise ClusterError("no cluster is up; `deeprig cluster up` starts one")
    from deeprig.cluster.jobs import dashboard_resources

    alive = dashboard_resources(cluster.dashboard).nodes
    cluster.workers += 1
    role = f"worker-{cluster.workers}"
    say(f"Ray worker node {cluster.workers} ({role}) joining {cluster.gcs_address}")
    _start_worker_node(cluster, cluster.workers, _node_env(cluster, home))
    cluster.save(state_file(home))
    _wait_until_ready(cluster, alive + 1, timeout_s, roles=(role,))
    return role


def _start_worker_node(cluster: LocalCluster, number: int, env: dict[str, str]) -> None:
    host = cluster.gcs_address.rpartition(":")[0]
    joined = [
        f"--address={cluster.gcs_address}",
        f"--node-ip-address={host}",
        f"--node-name=worker-{number}",
        # Each node unpacks jobs' working directories under its own temp folder: two
        # nodes sharing one would replace the folder a running driver works in.
        f"--temp-dir={cluster.temp_dir}-w{number}",
    ]
    cluster.process_groups[f"worker-{number}"] = _ray_start(
        joined, cluster.cpus_per_node, Path(cluster.logs) / f"worker-{number}.log", env
    )


def _new_cluster(
    home: Path,
    host: str,
    port: int,
    dashboard_port: int,
    tracking_port: int,
    workers: int,
    cpus: float,
    auth: bool,
) -> LocalCluster:
    root = private_folder(home / "cluster")
    private_folder(root / "logs")
    private_folder(root / "storage")
    return LocalCluster(
        dashboard=f"http://{host}:{dashboard_port}",
        gcs_address=f"{host}:{port}",
        tracking_uri=f"http://{host}:{tracking_port}",
        storage=str(root / "storage"),
        # Ray's session folders hold unix sockets, whose paths must stay short.
        temp_dir=f"/tmp/deeprig-{uuid.uuid4().hex[:8]}",
        workers=workers,
        cpus_per_node=cpus,
        logs=str(root / "logs"),
        auth=auth,
    )


class OpenToTheNetwork(ClusterError):
    """A tracking server without authentication on an address others can reach."""

    def __init__(self, host: str):
        super().__init__(
            f"--host {host} without authentication would let anyone who can reach this "
            "machine read and change every run, model and artifact: drop --no-auth (the "
            "tracking server then asks for MLflow users' passwords), or bind to 127.0.0.1"
        )


def _create_jobs_user(cluster: LocalCluster, home: Path) -> None:
    from deeprig.tracking.auth import JOBS_USER, AuthProblem

    try:
        create_jobs_user(cluster, home)
    except AuthProblem as exc:
        raise ClusterError(f"the tracking server refused to create {JOBS_USER}: {exc}") from None


def _node_env(cluster: LocalCluster, home: Path) -> dict[str, str]:
    from deeprig.cluster.ray_env import RAY_JOB_ENV, ensure_ray_token, use_token_auth_if_available
    from deeprig.tracking.auth import ServerCredentials, auth_folder, jobs_env

    ensure_ray_token()
    use_token_auth_if_available()
    # Job entrypoints (`deeprig run`) run with the PATH of the node that starts them.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    host = cluster.gcs_address.rpartition(":")[0]
    env = {**os.environ, **RAY_JOB_ENV, **cluster.job_env(), **loopback_env(host), "PATH": path}
    if cluster.auth:  # jobs log as the jobs user, through the variables MLflow reads
        env |= jobs_env(ServerCredentials.load_or_create(auth_folder(home)))
    return env


def _ray_start(args: list[str], cpus: float, log: Path, env: dict[str, str]) -> int:
    command = ray_start_command([*args, f"--num-cpus={cpus:g}", "--disable-usage-stats", "--block"])
    return spawn(command, log, env)


def _wait_until_ready(
    cluster: LocalCluster, nodes: int, timeout_s: float, roles: tuple[str, ...] | None = None
) -> None:
    """Until `nodes` nodes are alive and the tracking server answers; ClusterError when one
    of `roles` (default: every process group; a lost node's is gone) exits meanwhile."""
    from deeprig.cluster.jobs import dashboard_resources

    deadline = time.monotonic() + timeout_s
    last_error = "not started"
    watched = {r: g for r, g in cluster.process_groups.items() if roles is None or r in roles}
    while time.monotonic() < deadline:
        for role, pgid in watched.items():
            if not group_alive(pgid):
                log = Path(cluster.logs) / f"{role}.log"
                raise ClusterError(f"{role} exited during start-up ({_last_line(log)}); see {log}")
        try:
            alive = dashboard_resources(cluster.dashboard).nodes
            if alive >= nodes and tracking_healthy(cluster.tracking_uri):
                return
            last_error = f"{alive} of {nodes} nodes up"
        except Exception as exc:  # the dashboard is still starting
            last_error = f"{type(exc).__name__}: {exc}"
        time.sleep(1.0)
    raise ClusterError(
        f"cluster not ready after {timeout_s:g} s ({last_error}); see {cluster.logs}/"
    )


def _named(process, name: str) -> bool:
    import psutil

    try:
        return bool(process.name() == name)
    except psutil.NoSuchProcess:
        return False


def _last_line(log: Path) -> str:
    """What a process that died said last (Ray's start ends on the one-line reason)."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines()]
    except OSError:
        return "no log"
    said = [line for line in lines if line]
    return said[-1][:300] if said else "no output"


def processes(cluster: LocalCluster) -> list:
    """Every live process the cluster started (cluster/processes.py)."""
    return group_processes(cluster.process_groups.values())


def _alive(cluster: LocalCluster) -> bool:
    return any(group_alive(pgid) for pgid in cluster.process_groups.values())


def down(cluster: LocalCluster, home: Path | None = None, grace_s: float = 10.0) -> list[int]:
    """Stop every process of the cluster (SIGTERM, then SIGKILL after `grace_s`); return
    the pids still running afterwards (none, unless something refused SIGKILL). Ray's GCS
    goes last: a raylet stopped while its GCS still runs leaves at once (~0.1 s here), one
    whose GCS is already gone waits ~10 s for it."""
    running = processes(cluster)
    gcs = [p for p in running if _named(p, "gcs_server")]
    stop([p for p in running if p not in gcs], grace_s)
    stop(gcs + processes(cluster), grace_s)
    for folder in [cluster.temp_dir] + [
        f"{cluster.temp_dir}-w{i + 1}" for i in range(cluster.workers)
    ]:
        shutil.rmtree(folder, ignore_errors=True)
    path = state_file(home)
    if path.exists():
        path.unlink()
    return [p.pid for p in processes(cluster)]
