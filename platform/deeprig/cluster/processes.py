"""The processes `deeprig cluster up` starts and stops: each in a process group of its own,
found again by those groups (and their descendants: Ray's workers move to groups of their
own), stopped with SIGTERM then SIGKILL. Never by name: other Rays and MLflow servers on the
machine are not the cluster's."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterable
from pathlib import Path

from deeprig.tracking.store import private_file

# What the cluster's servers create (the MLflow store, the auth database, Ray's session
# files) is readable by its owner only.
SERVER_UMASK = 0o077


def spawn(command: list[str], log: Path, env: dict[str, str]) -> int:
    """Start `command` in a process group of its own (the group is what `stop` ends),
    under the private umask, its output appended to `log` (0600); the group's id."""
    with private_file(log).open("ab") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            umask=SERVER_UMASK,
        )
    return process.pid


def group_processes(groups: Iterable[int]) -> list:
    """Every live process of these process groups and their descendants (psutil's)."""
    import psutil

    wanted = set(groups)
    found: dict[int, psutil.Process] = {}
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) in wanted:
                found[process.pid] = process
                for child in process.children(recursive=True):
                    found[child.pid] = child
        except (psutil.NoSuchProcess, ProcessLookupError, psutil.AccessDenied):
            continue
    return [p for p in found.values() if _running(p)]


def in_group(processes: list, group: int | None) -> bool:
    """One of `processes` still belongs to `group` (its killed ones may linger as zombies
    where nothing reaps them: those are not running)."""
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            if os.getpgid(process.pid) == group:
                return True
    return False


def group_alive(pgid: int) -> bool:
    """A process of group `pgid` (or one it started) still runs. Signal 0 alone is not
    enough: a member that exited but that its parent has not reaped yet (a zombie: `cluster
    up` spawned the head and is still waiting for the cluster to be ready) still takes it,
    and a head that failed at once would look alive until the start-up timeout."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):  # (another user's: the id was reused)
        return False
    return bool(group_processes([pgid]))


def stop(processes: list, grace_s: float) -> None:
    """SIGTERM to each, SIGKILL to what still runs after `grace_s`."""
    import psutil

    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(processes, timeout=grace_s)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=5)


def _running(process) -> bool:
    import psutil

    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
