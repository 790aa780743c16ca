"""What a process writes to a tracking server, kept in order while the server is away.

Every write to a run (metric points, params, tags, artifacts, datasets, its status, its
creation when that waited: tracking/new_runs.py) is a `Record`, a
JSON-able dict naming its run, delivered in the order it was made. While the server is
reachable a record goes at once (`send`) or from a thread of the outbox's own (`put`).
When it is not (connection refused, a timeout, a 5xx, once MLflow's client has done its
own retries: `short_client_retries` keeps those to seconds, not minutes) the head record
and everything after it are written, in order, to a spool file under the deeprig home
(tracking/spool.py); the thread retries the head every few seconds and, once the server
answers, delivers the file line by line and deletes it. Memory holds at most
`max_in_memory` records (past that they go to the file too), so a long outage costs disk,
not memory, and a process that dies leaves its records in the spool for `deeprig runs
--sync`.

Redelivery never records a point twice. A metric point is fixed when it is made (key,
value, timestamp, step) and MLflow's SQL store keys points by all four: `log_batch`
inserts a request's points in one transaction and, when one already exists (a first
attempt that reached the server but whose answer was lost), records only the missing ones.
Params are sent again with the same value (allowed), tags and artifacts overwrite
themselves, a status is set again: every record may be delivered twice. A non-http store
(the embedded SQLite) does not go away: its errors are raised as they happen.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

Record = dict[str, Any]

# MLflow's client retries an HTTP call 7 times with backoff (~4 minutes) and waits 120 s for
# an answer: a job would stall that long per call. A few seconds of retries, then the
# outbox keeps the record and training goes on. A value the user set is kept.
SHORT_CLIENT_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}
RETRY_EVERY_S = 3.0  # how often a spooled head record is tried again
MAX_IN_MEMORY = 1000  # records; a metric record is one epoch's batch
_METRICS_PER_CALL, _PARAMS_PER_CALL = 1000, 100  # MLflow's log_batch limits


def short_client_retries() -> None:
    for name, value in SHORT_CLIENT_RETRIES.items():
        os.environ.setdefault(name, value)


def unreachable(error: BaseException) -> bool:
    """The server did not answer, or answered that it cannot now (a 5xx), or a run's
    creation has not reached it yet: worth trying later."""
    from mlflow.exceptions import MlflowException

    if isinstance(error, _try_later()):
        return True
    return isinstance(error, MlflowException) and error.get_http_status_code() >= 500


@functools.cache
def _try_later() -> tuple[type[BaseException], ...]:
    """The errors that mean "try later" by their type alone: the server away (no
    connection, no answer in time: requests' and the OS's) and a record whose run's
    creation has not reached the server yet. (Built when first asked: requests' import
    costs ~0.14 s, which a process that never meets a server need not pay.)"""
    import requests

    from deeprig.tracking.new_runs import NotCreatedYet

    return (requests.ConnectionError, requests.Timeout, ConnectionError, NotCreatedYet)


def metrics_record(run_id: str, points: list[tuple[str, float, int, int]]) -> Record:
    """(key, value, timestamp in ms, step) points: fixed here, so a redelivery is the same."""
    return {"op": "metrics", "run": run_id, "points": [list(p) for p in points]}


def params_record(run_id: str, params: dict[str, str]) -> Record:
    return {"op": "params", "run": run_id, "params": params}


def tags_record(run_id: str, tags: dict[str, str]) -> Record:
    return {"op": "tags", "run": run_id, "tags": tags}


def artifact_record(run_id: str, local: str | Path, artifact_path: str | None) -> Record:
    """A file or a folder's content, logged under `artifact_path` (None: the root)."""
    return {"op": "artifact", "run": run_id, "local": str(local), "path": artifact_path}


def inputs_record(run_id: str, inputs: list[dict[str, Any]]) -> Record:
    """The run's datasets: MLflow `DatasetInput`s as their `to_dictionary()`."""
    return {"op": "inputs", "run": run_id, "inputs": inputs}


def dataset_inputs(record: Record) -> list:
    """An inputs record's `DatasetInput`s again. (MLflow's `from_dictionary` leaves the
    tags as the dict `to_dictionary` made: its REST store then fails to send them.)"""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    fields = ("name", "digest", "source_type", "source", "schema", "profile")
    return [
        DatasetInput(
            Dataset(*(d["dataset"].get(field) for field in fields)),
            [InputTag(key, value) for key, value in (d.get("tags") or {}).items()],
        )
        for d in record["inputs"]
    ]


def status_record(run_id: str, status: str, at_ms: int | None = None) -> Record:
    """FINISHED, FAILED or KILLED (ended at `at_ms`), or RUNNING again."""
    return {"op": "status", "run": run_id, "status": status, "at": at_ms}


def deliver(client: Any, record: Record) -> None:
    """One record, by MLflow's client, raising what the client raises. A record naming
    the experiment its run waits in goes to the run made for it (tracking/new_runs.py)."""
    from mlflow.entities import Metric, Param, RunTag

    from deeprig.tracking.new_runs import create, stored_run_id

    op = record["op"]
    if op == "create":
        create(client, record)
        return
    run_id = stored_run_id(client, record["run"], record.get("experiment"))
    if op == "metrics":
        points = [Metric(k, v, t, s) for k, v, t, s in record["points"]]
        for start in range(0, len(points), _METRICS_PER_CALL):
            client.log_batch(run_id, metrics=points[start : start + _METRICS_PER_CALL])
    elif op == "params":
        params = [Param(k, v) for k, v in sorted(record["params"].items())]
        for start in range(0, len(params), _PARAMS_PER_CALL):
            client.log_batch(run_id, params=params[start : start + _PARAMS_PER_CALL])
    elif op == "tags":
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in record["tags"].items()])
    elif op == "artifact":
        if Path(record["local"]).is_dir():
            client.log_artifacts(run_id, record["local"], record["path"])
        else:
            client.log_artifact(run_id, record["local"], record["path"])
    elif op == "inputs":
        client.log_inputs(run_id, datasets=dataset_inputs(record))
    elif op == "status":
        if record["status"] == "RUNNING":
            client.update_run(run_id, status="RUNNING")
        else:
            client.set_terminated(run_id, status=record["status"], end_time=record["at"])
    else:
        raise ValueError(f"unknown record {op!r}")


class Outbox:
    """One writer's records to one tracking store, delivered in order (module docstring).

    `spool_dir`: where this writer's records wait while the server is away; None for a
    store that never goes away (each error raised at once). `waits_in`: the experiment of a
    run whose creation waited (tracking/new_runs.py), named on each record."""

    def __init__(
        self,
        client: Callable[[], Any],
        spool_dir: Path | None,
        max_in_memory: int = MAX_IN_MEMORY,
        retry_every_s: float | None = None,  # RETRY_EVERY_S
        waits_in: str | None = None,
    ):
        self._client = client
        self.spool_dir = spool_dir
        self.waits_in = waits_in
        self.max_in_memory = max_in_memory
        self.retry_every_s = RETRY_EVERY_S if retry_every_s is None else retry_every_s
        self._memory: deque[Record] = deque()
        self._spill: Path | None = None  # records after those in memory, one JSON a line
        self._spill_read = 0  # byte offset of the next undelivered line of the spill
        self._spill_left = 0  # its lines from there
        self._lock = threading.Lock()  # the queue
        self._changed = threading.Condition(self._lock)
        self._delivering = threading.Lock()  # one delivery at a time, in order
        self._thread: threading.Thread | None = None
        self.down_since: float | None = None  # monotonic; None while the server answers
        self.error: BaseException | None = None  # a record refused for good, raised at wait

    # -- writing

    def send(self, record: Record) -> None:
        """Deliver now when nothing waits before it; else (or when the server is away)
        queue it behind the rest."""
        record = self._addressed(record)
        with self._delivering:
            with self._lock:
                waiting = self._waiting()
            if not waiting:
                try:
                    deliver(self._client(), record)
                    return
                except Exception as error:
                    if self.spool_dir is None or not unreachable(error):
                        raise
                    self.down_since = self.down_since or time.monotonic()
        self.put(record)

    def put(self, record: Record) -> None:
        """Queue it; the outbox's thread delivers it after every record before it."""
        record = self._addressed(record)
        if record["op"] == "artifact" and self.spool_dir is not None:
            record = self._kept_copy(record)
        with self._lock:
            full = self.spool_dir is not None and len(self._memory) >= self.max_in_memory
            if self._spill is not None or self.down_since is not None or full:
                self._append_to_spill([record])
            else:
                self._memory.append(record)
            self._changed.notify_all()
        self._start()

    def _addressed(self, record: Record) -> Record:
        if self.waits_in is None or "experiment" in record:  # (another run's: its own)
            return record
        return record | {"experiment": self.waits_in}

    # -- waiting

    def pending(self) -> int:
        """Records not delivered yet (in memory and in the spool file)."""
        with self._lock:
            return len(self._memory) + self._spill_left

    def wait(self, timeout_s: float | None = None, until_down: bool = True) -> bool:
        """Until every record is delivered (True), or the server is away (`until_down`) or
        `timeout_s` passed (False). A record the server refused for good is raised."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._lock:
            while self._waiting() and not (until_down and self.down_since is not None):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._changed.wait(timeout=0.5 if left is None else min(left, 0.5))
            done = not self._waiting()
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return done

    # -- the thread

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="deeprig-outbox", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._waiting():
                    self._changed.wait()
                record, from_spill = self._head()
            away = False
            with self._delivering:
                try:
                    deliver(self._client(), record)
                except Exception as error:
                    if self.spool_dir is None or not unreachable(error):
                        self.error = error  # (dropped: sending it again cannot help)
                    else:
                        self._went_down()
                        away = True
            if away:  # (the pause outside the lock: a `send` meanwhile queues at once)
                time.sleep(self.retry_every_s)
                continue
            with self._lock:
                self.down_since = None
                self._delivered(from_spill)
                self._changed.notify_all()

    def _went_down(self) -> None:
        with self._lock:
            if self.down_since is None:
                self.down_since = time.monotonic()
            if self._memory:  # (kept on disk: the process may end before the server is back)
                self._rewrite_spill()
            self._changed.notify_all()

    # -- the queue (under self._lock)

    def _waiting(self) -> bool:
        return bool(self._memory) or self._spill_left > 0

    def _head(self) -> tuple[Record, bool]:
        if self._memory:
            return self._memory[0], False
        assert self._spill is not None
        with self._spill.open("rb") as file:
            file.seek(self._spill_read)
            return json.loads(file.readline()), True

    def _delivered(self, from_spill: bool) -> None:
        if not from_spill:
            self._memory.popleft()
            return
        assert self._spill is not None
        with self._spill.open("rb") as file:
            file.seek(self._spill_read)
            file.readline()
            self._spill_read = file.tell()
        self._spill_left -= 1
        if self._spill_left == 0:
            self._spill.unlink()
            self._spill, self._spill_read = None, 0

    def _append_to_spill(self, records: list[Record]) -> None:
        if self._spill is None:
            from deeprig.tracking.store import private_folder

            assert self.spool_dir is not None
            private_folder(self.spool_dir)
            name = f"{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
            self._spill, self._spill_read = self.spool_dir / name, 0
        with self._spill.open("a") as file:
            for record in records:
                file.write(json.dumps(record) + "\n")
        self._spill_left += len(records)

    def _rewrite_spill(self) -> None:
        """The records in memory go to the spill file before those already there."""
        later: list[str] = []
        if self._spill is not None:
            with self._spill.open("rb") as file:
                file.seek(self._spill_read)
                later = [line.decode() for line in file]
            self._spill.unlink()
            self._spill, self._spill_left = None, 0
        self._append_to_spill(list(self._memory))
        self._memory.clear()
        assert self._spill is not None
        with self._spill.open("a") as file:
            file.writelines(later)
        self._spill_left += len(later)

    def _kept_copy(self, record: Record) -> Record:
        """An artifact's file copied under the spool: a caller's temporary file is gone by
        the time a queued record is delivered."""
        assert self.spool_dir is not None
        source = Path(record["local"])
        kept = self.spool_dir / "files" / uuid.uuid4().hex / source.name
        kept.parent.mkdir(parents=True, mode=0o700)
        if source.is_dir():
            shutil.copytree(source, kept)
        else:
            shutil.copy2(source, kept)
        return record | {"local": str(kept)}
