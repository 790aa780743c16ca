"""Records kept on disk while a run's tracking server was away, and their upload.

A run's spool is `<deeprig home>/spool/<run id>/`: one JSON-lines file per writer that saw
the server go (the driver, the Train controller, a worker's rank 0), named
`<ns>-<pid>-<id>.jsonl` so that sorting them is the order they were begun in, and the
artifacts' files they name under `files/`. A writer delivers its own file when the server
comes back; what is left when it ends (the job over, the server still away) is uploaded
by `deeprig runs --sync [RUN]` (`upload_spooled`), or by the driver's end of the job once
the server is back.
Every record can be delivered twice (tracking/outbox.py), so an upload cut short is
simply run again. A run whose creation waited for its server is spooled under its
provisional id, its creation first (tracking/new_runs.py).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from deeprig.tracking.outbox import deliver
from deeprig.tracking.store import deeprig_home

SPOOL_FOLDER = "spool"


def spool_dir(run_id: str, home: Path | None = None) -> Path:
    return (home or deeprig_home()) / SPOOL_FOLDER / run_id


def spooled_runs(home: Path | None = None) -> dict[str, int]:
    """run id -> records waiting in its spool, of every run with some."""
    root = (home or deeprig_home()) / SPOOL_FOLDER
    found = {}
    for folder in sorted(root.glob("*")) if root.is_dir() else []:
        count = sum(_count_lines(f) for f in _files(folder))
        if count:
            found[folder.name] = count
    return found


@dataclass(frozen=True)
class Uploaded:
    run_id: str
    records: int  # delivered now
    skipped_files: int  # of a writer still running: its own outbox delivers them


def upload(client: object, run_id: str, home: Path | None = None) -> Uploaded:
    """Every finished writer's records of the run, in order, each file deleted once
    delivered; the spool folder removed when nothing is left. Raises what the client
    raises (the server still away: what was not delivered stays)."""
    folder = spool_dir(run_id, home)
    delivered = skipped = 0
    for path in _files(folder):
        if _writer_alive(path):
            skipped += 1
            continue
        with path.open() as file:
            for line in file:
                deliver(client, json.loads(line))
                delivered += 1
        path.unlink()
    if folder.is_dir() and not _files(folder):
        shutil.rmtree(folder)
    return Uploaded(run_id, delivered, skipped)


def _waits_for_creation(run_id: str) -> bool:
    """The spooled records name the experiment their run is made in: its id is
    provisional, not one the server knows."""
    for path in _files(spool_dir(run_id)):
        with path.open() as file:
            first = file.readline()
        if first:
            record = json.loads(first)
            return record["run"] == run_id and record.get("experiment") is not None
    return False


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.jsonl")) if folder.is_dir() else []


def _count_lines(path: Path) -> int:
    with path.open("rb") as file:
        return sum(1 for _ in file)


def _writer_alive(path: Path) -> bool:
    """The file's writer is a process still running on this machine (this one included:
    its outbox delivers the file itself)."""
    try:
        pid = int(path.name.split("-")[1])
    except (IndexError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def upload_spooled(uri: str, run_ids: list[str] | None = None) -> list[Uploaded | str]:
    """Each spooled run's records (or only `run_ids`') uploaded to the store at `uri`: its
    `Uploaded`, or why not (the store still away, a run it does not hold), in one line."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from deeprig.tracking.outbox import short_client_retries, unreachable

    short_client_retries()
    client = MlflowClient(uri)
    results: list[Uploaded | str] = []
    waiting = spooled_runs()
    for run_id in run_ids if run_ids is not None else list(waiting):
        try:
            if not _waits_for_creation(run_id):
                client.get_run(run_id)
            results.append(upload(client, run_id))
        except Exception as error:
            if not (unreachable(error) or isinstance(error, MlflowException)):
                raise
            reason = "did not answer" if unreachable(error) else "has no such run"
            kept = "; its records are kept" if run_id in waiting else ""
            results.append(f"{run_id}: {uri} {reason}{kept}")
    return results
