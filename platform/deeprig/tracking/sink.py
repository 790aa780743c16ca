"""Rank 0's metric sink: per-epoch metrics batched into one asynchronous MLflow call,
and step-level metrics buffered into a batch every few seconds.

One `log_batch` per epoch instead of one call per metric (1000 single calls cost 3.6 s on
SQLite and 52 s over HTTP here); asynchronous so the training step never waits on it.
One batch in flight per job, in order, on a thread of its own: MLflow's own async queue
sends up to 10 at once per writer, and three jobs doing that against one tracking server
exhausted its database connection pool and lost batches (tests/e2e, measured).

Step-level points (tracking.log_every_n_steps) wait in a buffer until STEP_BATCH_SECONDS
have passed or STEP_BATCH_POINTS are waiting, then go as one batch: a point every few
optimiser steps must not cost an HTTP call each. A restarted worker first asks MLflow for
the last step it has, and never sends a step twice.

Every point and tag goes through an `Outbox` (tracking/outbox.py): while the tracking
server is away they wait, in order, in the run's spool, and training goes on. A sink of a
run this job created (tracking/new_runs.py) knows the run holds nothing it did not send:
asked for its newest step while the server is away, it answers -1 instead of failing the
first report.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from deeprig.tracking import new_runs
from deeprig.tracking.new_runs import stored_run_id
from deeprig.tracking.outbox import (
    Outbox,
    metrics_record,
    params_record,
    short_client_retries,
    tags_record,
    unreachable,
)

STEP_BATCH_SECONDS = 5.0
STEP_BATCH_POINTS = 200  # metrics, not steps: MLflow takes up to 1000 in one log_batch


def numeric_values(values: dict[str, Any]) -> dict[str, float]:
    """What MLflow can record as metrics: the numbers (bools are not metrics)."""
    return {
        k: float(v)
        for k, v in values.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


class MlflowMetricsSink:
    def __init__(
        self,
        tracking_uri: str,
        run_id: str,
        log_epochs: bool = True,
        waits_in: str | None = None,
        new_run: bool | None = None,
    ):
        """`waits_in`: the experiment of a run whose creation waited for its server;
        `new_run`: the run was created by this job. Both default to what this process
        knows of the runs it records to (tracking/new_runs.py)."""
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        # False when the Train controller logs the epochs (tracking/report_logger.py): the
        # worker then only sets tags.
        self.log_epochs = log_epochs
        self.waits_in = waits_in if waits_in is not None else new_runs.waits_in(run_id)
        self.new_run = new_run if new_run is not None else new_runs.created_here(run_id)
        self._client: Any = None
        self._outbox: Outbox | None = None
        self._steps: list[tuple[str, float, int, int]] = []  # step-level points not sent yet
        self._steps_sent_at = time.monotonic()
        self._last_step_recorded: dict[str, int] = {}  # key -> newest step MLflow holds

    def __getstate__(self) -> dict[str, Any]:
        # Shipped to workers: send the address, not a live client.
        return {
            "tracking_uri": self.tracking_uri,
            "run_id": self.run_id,
            "log_epochs": self.log_epochs,
            "waits_in": self.waits_in,
            "new_run": self.new_run,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        MlflowMetricsSink.__init__(self, **state)

    def tags_only(self) -> MlflowMetricsSink:
        return MlflowMetricsSink(self.tracking_uri, self.run_id, False, self.waits_in, self.new_run)

    @property
    def client(self):
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(self.tracking_uri)
        return self._client

    @property
    def outbox(self) -> Outbox:
        """Where this sink's points and tags go, one at a time, in order."""
        if self._outbox is None:
            from deeprig.tracking.spool import spool_dir

            short_client_retries()
            spool = spool_dir(self.run_id) if self.tracking_uri.startswith("http") else None
            self._outbox = Outbox(lambda: self.client, spool, waits_in=self.waits_in)
        return self._outbox

    def warm_up(self) -> None:
        """MLflow imported and the store opened (each made once per process) before the
        first point needs them; a problem here is the first point's to report."""
        short_client_retries()  # (as the outbox: a server away is not waited on for minutes)
        with contextlib.suppress(Exception):  # (a failed warm-up costs only what it saved)
            self.client.search_experiments(max_results=1)

    def log(self, metrics: dict[str, float], step: int, timestamp: float | None = None) -> None:
        """One step's metrics, at `timestamp` (unix seconds; default now)."""
        if not self.log_epochs:
            return
        now = int((timestamp or time.time()) * 1000)
        points = [(key, float(value), now, step) for key, value in metrics.items()]
        self.outbox.put(metrics_record(self.run_id, points))

    def log_step(self, metrics: dict[str, float], step: int) -> None:
        """Step-level points, buffered (sent whatever `log_epochs` says: the controller
        sees epochs only)."""
        now = int(time.time() * 1000)
        for key, value in metrics.items():
            if step > self._newest_recorded(key):
                self._steps.append((key, float(value), now, step))
        waited = time.monotonic() - self._steps_sent_at
        if len(self._steps) >= STEP_BATCH_POINTS or waited >= STEP_BATCH_SECONDS:
            self._send_steps()

    def _newest_recorded(self, key: str) -> int:
        if key not in self._last_step_recorded:
            self._last_step_recorded[key] = self.newest_step(key)
        return self._last_step_recorded[key]

    def newest_step(self, key: str) -> int:
        """The newest step the run holds of `key`; -1 if none (and for a run this job
        created, while its server is away)."""
        try:
            run_id = stored_run_id(self.client, self.run_id, self.waits_in)
            history = self.client.get_metric_history(run_id, key)
        except Exception as error:
            if self.new_run and unreachable(error):
                return -1
            raise
        return max((m.step for m in history), default=-1)

    def _send_steps(self) -> None:
        points, self._steps = self._steps, []
        self._steps_sent_at = time.monotonic()
        self.outbox.put(metrics_record(self.run_id, points))

    def tag(self, key: str, value: str) -> None:
        self.outbox.send(tags_record(self.run_id, {key: value}))

    def log_params(self, params: dict[str, str]) -> None:
        """Params a worker learned (its FLOPs per sample, the hardware's peak FLOP/s), from
        rank 0's first report on the controller, through the outbox. MLflow never changes a
        param: only those the run lacks are sent, so a restarted worker's first values stay
        (all of them when the server cannot be asked)."""
        try:
            run_id = stored_run_id(self.client, self.run_id, self.waits_in)
            recorded = self.client.get_run(run_id).data.params
        except Exception:  # (the server away: the outbox keeps them for later)
            recorded = {}
        if new := {key: value for key, value in params.items() if key not in recorded}:
            self.outbox.send(params_record(self.run_id, new))

    def flush(self) -> None:
        """Send the buffered steps, and wait for every batch sent so far; raises if one
        could not be recorded. While the server is away it returns at once: the points
        wait in the run's spool, delivered when the server is back."""
        if self._steps:
            self._send_steps()
        if self._outbox is not None:
            self.outbox.wait()
