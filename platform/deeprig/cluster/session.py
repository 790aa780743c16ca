"""The one place deeprig calls `ray.init`."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from deeprig.cluster.ray_env import RAY_JOB_ENV, use_token_auth_if_available


def job_address(address: str | None) -> str | None:
    """The cluster a job runs on: the address given, else the one Ray sets for a driver it
    started (a Ray Jobs entrypoint, `ray job submit`), else None for a local Ray."""
    return address or os.environ.get("RAY_ADDRESS") or None


@contextmanager
def ray_session(
    address: str | None = None,
    num_cpus: int | None = None,
    py_modules: list[str] | None = None,
    show_worker_output: bool = True,
) -> Iterator[None]:
    """Connect to `address` (a running cluster: "auto", "ray://host:10001", "host:6379") or
    start a local Ray for the duration of the block. Reuses a Ray that is already up (the
    test suite's, or the one Ray Jobs started this driver in). `py_modules`: the user's
    modules, shipped by Ray to every process of the job on every node.
    `show_worker_output`: Ray forwards what its workers and actors print to this process's
    terminal; False leaves it in Ray's log files (the session's `logs/` folder)."""
    if address:
        _join_cluster_up(address)
    import ray

    global _owned, _release
    if ray.is_initialized():
        # Not this block's Ray, even when an outer `ray_session` of this process started it
        # (the test suite's): the job's `release_ray` leaves it up for the next job.
        outer_owned, _owned = _owned, False
        try:
            yield
        finally:
            _owned = outer_owned
        return
    if address:
        use_token_auth_if_available()
    else:
        # A local Ray inherits this process's environment.
        for key, value in RAY_JOB_ENV.items():
            os.environ.setdefault(key, value)
    # ray.init replaces the SIGTERM handler with sys.exit; a job stopped through the Jobs
    # API (SIGTERM) must end as interrupted (MLflow run KILLED), so keep deeprig's.
    sigterm_handler = signal.getsignal(signal.SIGTERM)
    # Ray warns on every start that token authentication is on (it stays on; the README
    # says so once).
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        logging.ERROR
    )
    runtime_env: dict[str, object] = {}
    # A driver started by Ray Jobs already runs in its job's runtime env; Ray refuses a
    # second value for a variable the job sets, so send only what is missing.
    if missing := _missing_job_env():
        runtime_env["env_vars"] = missing
    if py_modules:
        runtime_env["py_modules"] = py_modules
    ray.init(
        address=address,
        num_cpus=None if address else num_cpus,
        runtime_env=runtime_env or None,
        log_to_driver=show_worker_output,
        # A local job's Ray starts without its dashboard (~1 s of start-up and a process
        # on the CPUs the job trains on); DEEPRIG_RAY_DASHBOARD=1 keeps it. A cluster has
        # its own (`deeprig cluster up`).
        include_dashboard=None if address else os.environ.get("DEEPRIG_RAY_DASHBOARD") == "1",
        logging_level=logging.WARNING,
        # Applies to every worker of this job: Ray Train and Ray Data log each report and
        # each dataset execution at INFO, which would bury deeprig's own progress.
        logging_config=ray.LoggingConfig(encoding="TEXT", log_level="WARNING"),
    )
    if callable(sigterm_handler) and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, sigterm_handler)
    quiet_ray_data()
    _owned = True
    try:
        yield
    finally:
        _owned = False
        if _release is not None:
            _release.join()
            _release = None
        else:
            ray.shutdown()


# The Ray this process started with `ray_session` (False for one it found running), and
# the thread shutting it down once the job said it needs Ray no more.
_owned = False
_release: threading.Thread | None = None


def release_ray() -> None:
    """The job needs Ray no more (its results are on the driver): a Ray that
    `ray_session` started shuts down in a background thread while the driver records
    them, and `ray_session` waits for it at its end. `ray.shutdown` took ~1.4 s after
    the quickstart, mostly waiting on Ray's processes (benchmarks/RESULTS.md, figure 11).
    A Ray found running (the test suite's, a Ray Jobs driver's) is left alone. Idempotent."""
    global _release
    if not _owned or _release is not None:
        return
    import ray

    _release = threading.Thread(target=ray.shutdown, name="deeprig-ray-shutdown", daemon=True)
    _release.start()


def _join_cluster_up(address: str) -> None:
    """A driver joining the `deeprig cluster up` cluster of this machine by its GCS address
    joins it on that cluster's address (loopback by default: see cluster/ray_nodes.py)."""
    from deeprig.cluster.local import running_cluster
    from deeprig.cluster.ray_nodes import join_on_loopback

    cluster = running_cluster()
    if cluster is not None and address.split("://")[-1] == cluster.gcs_address:
        join_on_loopback(address)


def _missing_job_env() -> dict[str, str]:
    return {key: value for key, value in RAY_JOB_ENV.items() if os.environ.get(key) != value}


def quiet_ray_data() -> None:
    """deeprig shows its own progress; Ray Data's per-operator bars would interleave.
    Per process: the driver, and each Tune trial that builds datasets."""
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
