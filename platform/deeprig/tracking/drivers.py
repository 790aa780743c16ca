"""Which process drives a run, and closing the runs whose driver is gone.

A driver killed outright (SIGKILL, a closed laptop, a lost SSH session) cannot mark its
run: it stays RUNNING. Each run therefore carries its driver's host, pid and start time;
`deeprig runs --close-stale` marks FAILED every RUNNING run whose driver on this host no
longer lives (a pid reused by another process does not count: its start time differs).
A run driven from another host is left alone and listed as such.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import psutil
from mlflow import MlflowClient
from mlflow.entities import ViewType

from deeprig.tracking.store import TrackingTarget
from deeprig.tracking.tags import RunStatus, Tag


def driver_tags() -> dict[str, str]:
    """This process, as a run's driver."""
    me = psutil.Process(os.getpid())
    return {
        Tag.DRIVER_HOST: socket.gethostname(),
        Tag.DRIVER_PID: str(me.pid),
        Tag.DRIVER_STARTED: f"{me.create_time():.2f}",
    }


@dataclass(frozen=True)
class StaleCheck:
    run_id: str
    experiment: str
    job: str
    verdict: str  # "closed" | "alive" | "other host" | "unknown driver"
    detail: str


def close_stale_runs(target: TrackingTarget) -> list[StaleCheck]:
    """Every RUNNING run of the store, judged; those whose driver is gone marked FAILED
    with deeprig.failure=driver_lost."""
    client = MlflowClient(target.uri)
    experiments = {
        e.experiment_id: e.name for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)
    }
    if not experiments:
        return []
    running = client.search_runs(
        list(experiments), filter_string="attributes.status = 'RUNNING'", max_results=5000
    )
    host = socket.gethostname()
    checks = []
    for run in running:
        tags = run.data.tags
        verdict, detail = judge_driver(tags, host)
        if verdict == "closed":
            client.set_tag(run.info.run_id, Tag.FAILURE, "driver_lost")
            client.set_terminated(run.info.run_id, RunStatus.FAILED)
        checks.append(
            StaleCheck(
                run.info.run_id,
                experiments.get(run.info.experiment_id, run.info.experiment_id),
                tags.get(Tag.JOB_NAME, run.info.run_name or ""),
                verdict,
                detail,
            )
        )
    return checks


def judge_driver(tags: dict[str, str], host: str) -> tuple[str, str]:
    """(verdict, why) for a run with these tags, judged on `host`."""
    if Tag.DRIVER_PID not in tags:
        # A search's trial is closed by its search; a run from before these tags is not
        # judged blind.
        return "unknown driver", "no driver recorded"
    where, pid = tags.get(Tag.DRIVER_HOST, "?"), int(tags[Tag.DRIVER_PID])
    if where != host:
        return "other host", f"driven from {where}: run this there"
    try:
        started = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return "closed", f"pid {pid} is gone"
    if abs(started - float(tags.get(Tag.DRIVER_STARTED, "0"))) > 1.0:
        return "closed", f"pid {pid} is another process now"
    return "alive", f"pid {pid} still runs"
