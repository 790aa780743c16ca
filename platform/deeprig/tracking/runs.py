"""Driver-side MLflow records: create a run, finish it, log metrics, figures and files, find
a search's child runs (the figures: deeprig/plots.py; the model: logged_model.py).

A recorder writes through an `Outbox` (tracking/outbox.py): at once while the tracking
server answers, kept in order in the run's spool while it is away. A run made while its
server is away is created once it answers (tracking/new_runs.py); its recorder reads it
under the id the server gave it."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.tracking._tracking_service.utils import _use_tracking_uri

from deeprig.tracking import new_runs
from deeprig.tracking.lineage import flatten, lineage_tags, standard_tags
from deeprig.tracking.new_runs import create_record, provisional_run_id, stored_run_id
from deeprig.tracking.new_runs import ensure_experiment as ensure_named_experiment
from deeprig.tracking.outbox import (
    Outbox,
    artifact_record,
    inputs_record,
    metrics_record,
    params_record,
    short_client_retries,
    status_record,
    tags_record,
    unreachable,
)
from deeprig.tracking.sink import MlflowMetricsSink
from deeprig.tracking.spool import spool_dir, spooled_runs, upload
from deeprig.tracking.store import TRACKING_URI_ENV, TrackingTarget, prepare_store
from deeprig.tracking.tags import MLFLOW_PARENT_RUN_ID, RunStatus, Tag

_PARAM_VALUE_MAX = 6000


class RunRecorder:
    """One MLflow run, seen from the driver."""

    def __init__(self, target: TrackingTarget, run_id: str, waits_in: str | None = None):
        """`waits_in`: the experiment of a run whose creation waited for its server
        (`run_id` is then provisional; by default, what this process knows of it)."""
        self.target = target
        self.run_id = run_id
        self.waits_in = waits_in if waits_in is not None else new_runs.waits_in(run_id)
        remote = target.uri.startswith("http")
        if remote:
            short_client_retries()
        self.client = MlflowClient(target.uri)
        spool = spool_dir(run_id) if remote else None
        self.outbox = Outbox(lambda: self.client, spool, waits_in=self.waits_in)

    @classmethod
    def create(
        cls,
        target: TrackingTarget,
        experiment: str,
        spec_dict: dict[str, Any],
        spec_text: str,
        spec_dir: Path,
        ray_job_id: str | None = None,
        run_name: str | None = None,
        extra_tags: dict[str, str] | None = None,
        spec_path: Path | None = None,
    ) -> RunRecorder:
        """A new run; while a tracking server does not answer, one created once it does
        (its records wait in the spool after its creation)."""
        prepare_store(target)
        remote = target.uri.startswith("http")
        if remote:
            short_client_retries()
        client = MlflowClient(target.uri)
        tags = lineage_tags(spec_dict, spec_dir, ray_job_id) | standard_tags(spec_text, spec_path)
        tags |= extra_tags or {}
        name = run_name or spec_dict["name"]
        started = int(time.time() * 1000)
        try:
            experiment_id = ensure_experiment(client, target, experiment)
            run = client.create_run(experiment_id, start_time=started, run_name=name, tags=tags)
            recorder = cls(target, run.info.run_id)
        except Exception as error:
            if not remote or not unreachable(error):
                raise
            recorder = cls(target, provisional_run_id(), waits_in=experiment)
            location = _artifact_location(target, experiment)
            recorder.outbox.put(
                create_record(recorder.run_id, experiment, location, name, tags, started)
            )
        new_runs.remember(recorder.run_id, recorder.waits_in, created_here=True)
        recorder.log_params(flatten("", spec_dict, {}))
        recorder.log_text(spec_text, "spec/job.yaml")
        return recorder

    def finish(self, status: RunStatus) -> None:
        """FINISHED, FAILED or KILLED. A run is never left RUNNING (while its server is
        away, the status waits in its spool with the rest). Once the server has it, what
        other writers of the run left in the spool (the Train controller's points) is
        uploaded too."""
        self.outbox.send(status_record(self.run_id, str(status), int(time.time() * 1000)))
        if self.outbox.wait() and self.outbox.spool_dir is not None:
            upload(self.client, self.run_id)

    def spooled(self) -> int:
        """Records of this run waiting in its spool for its tracking server (0: all in)."""
        return spooled_runs().get(self.run_id, 0)

    @property
    def stored_id(self) -> str:
        """The id the store holds the run under: `run_id`, or the one its server gave a
        run whose creation waited (NotCreatedYet, an `unreachable` error, until then)."""
        return stored_run_id(self.client, self.run_id, self.waits_in)

    def created_as(self) -> str | None:
        """The id the server gave a run whose creation waited, None while it has none."""
        try:
            return self.stored_id
        except Exception as error:
            if unreachable(error):
                return None
            raise

    def reopen(self) -> None:
        """A resumed job's run is RUNNING again until the job ends."""
        self.outbox.send(status_record(self.run_id, str(RunStatus.RUNNING)))

    def status(self) -> RunStatus:
        return RunStatus(self.client.get_run(self.stored_id).info.status)

    def answers(self) -> bool:
        """Whether the run's store answers now (after MLflow's client's few retries): what
        reads the run back needs it; writes wait in the spool without."""
        try:
            self.client.get_run(self.stored_id)
        except Exception as error:
            if unreachable(error):
                return False
            raise
        return True

    def set_tags(self, tags: dict[str, str]) -> None:
        self.outbox.send(tags_record(self.run_id, {k: str(v) for k, v in tags.items()}))

    def set_tags_of(self, run_id: str, tags: dict[str, str]) -> None:
        """Tags on another run of the store (a search's best trial), in order with this
        run's records."""
        record = tags_record(run_id, tags) | {"experiment": new_runs.waits_in(run_id)}
        self.outbox.send(record)

    def tags(self) -> dict[str, str]:
        return dict(self.client.get_run(self.stored_id).data.tags)

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        """One batch, sent now (per-step streams go through MlflowMetricsSink)."""
        now = int(time.time() * 1000)
        points = [(k, float(v), now, step) for k, v in metrics.items()]
        self.outbox.send(metrics_record(self.run_id, points))

    def log_params(self, params: dict[str, str]) -> None:
        kept = {k: v[:_PARAM_VALUE_MAX] for k, v in params.items()}
        self.outbox.send(params_record(self.run_id, kept))

    def log_inputs(self, inputs: list[Any]) -> None:
        """MLflow `DatasetInput`s: the datasets the run read."""
        self.outbox.send(inputs_record(self.run_id, [i.to_dictionary() for i in inputs]))

    def metrics_sink(self) -> MlflowMetricsSink:
        """A sink that streams metrics into this run (batched, off the caller's thread)."""
        return MlflowMetricsSink(self.target.uri, self.run_id, waits_in=self.waits_in)

    def system_metrics(self) -> AbstractContextManager[Any]:
        """MLflow's system metrics of this machine, logged on the run inside the block
        (MLflow's monitor logs them itself: not for a run still being created)."""
        if self.waits_in is not None:
            return contextlib.nullcontext()
        return SystemMetrics(self)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """A matplotlib figure (deeprig/plots.py draws them) as an image artifact."""
        self._log_file(artifact_file, figure.savefig)

    def log_csv(self, frame: Any, artifact_file: str) -> None:
        """A pandas DataFrame as a CSV artifact."""
        self._log_file(artifact_file, lambda path: frame.to_csv(path, index=False))

    def _log_file(self, artifact_file: str, write: Callable[[Path], Any]) -> None:
        """The file `write` makes, logged as `artifact_file`."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            write(path)
            folder = str(Path(artifact_file).parent)
            self.outbox.send(artifact_record(self.run_id, path, None if folder == "." else folder))

    def page_url(self, ui_base: str | None = None) -> str | None:
        """The run's page in MLflow's UI: on the tracking server it records to, or on
        `ui_base` (a local `deeprig ui`); None for a local store without a UI given."""
        base = ui_base or (self.target.uri if self.target.uri.startswith("http") else None)
        if base is None or not self.answers():
            return None
        experiment_id = self.client.get_run(self.stored_id).info.experiment_id
        return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{self.stored_id}"

    def child_runs(self) -> dict[str, ChildRun]:
        """trial id -> the child run of that trial, read back from MLflow."""
        experiment_id = self.client.get_run(self.stored_id).info.experiment_id
        runs = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{self.stored_id}'"
        )
        return {
            r.data.tags.get(Tag.TRIAL_ID, ""): ChildRun(
                RunRecorder(self.target, r.info.run_id), RunStatus(r.info.status), r.data.tags
            )
            for r in runs
        }

    def delete(self) -> None:
        """Deleted runs stay restorable in MLflow (`mlflow gc` removes them for good)."""
        self.client.delete_run(self.stored_id)

    def latest_metrics(self) -> dict[str, float]:
        return dict(self.client.get_run(self.stored_id).data.metrics)

    def metric_times(self, key: str) -> list[tuple[int, float, float]]:
        """(step, value, timestamp in unix seconds) of every point of `key`."""
        history = self.client.get_metric_history(self.stored_id, key)
        return sorted((m.step, m.value, m.timestamp / 1000) for m in history)

    def metric_history(self, key: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in self.client.get_metric_history(self.stored_id, key)]

    def log_dict(self, content: dict[str, Any], artifact_file: str) -> None:
        """A JSON (or YAML, by the file's suffix) artifact, written as MLflow's log_dict
        writes it."""
        if Path(artifact_file).suffix in (".yaml", ".yml"):
            import yaml

            text = yaml.dump(content, indent=2, default_flow_style=False)
        else:
            text = json.dumps(content, indent=2)
        self.log_text(text, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._log_file(artifact_file, lambda path: path.write_text(text, encoding="utf-8"))

    def log_directory(self, directory: str | Path, artifact_path: str) -> None:
        self.outbox.send(artifact_record(self.run_id, directory, artifact_path))

    def log_code(self, files: dict[str, bytes], manifest: str, sha256: str) -> None:
        """The user's code as it was shipped: each file under `code/`, the sha256 manifest
        as `code/MANIFEST.sha256`, and the manifest's hash as a tag."""
        with tempfile.TemporaryDirectory() as tmp:
            for relative, content in files.items():
                path = Path(tmp) / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
            (Path(tmp) / "MANIFEST.sha256").write_text(manifest)
            self.outbox.send(artifact_record(self.run_id, tmp, "code"))
        self.set_tags({Tag.CODE_SHA256: sha256})


@contextmanager
def fluent_api_on(uri: str) -> Iterator[None]:
    """MLflow's fluent API (mlflow.start_run, log_model) on `uri` in the block; after it,
    MLflow's tracking URI and $MLFLOW_TRACKING_URI exactly as they were (unset stays
    unset). mlflow.set_tracking_uri also writes the variable, so restoring with it would
    pin MLflow's default store, and a second job in this process would record there."""
    saved = os.environ.get(TRACKING_URI_ENV)
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        if saved is None:
            os.environ.pop(TRACKING_URI_ENV, None)
        else:
            os.environ[TRACKING_URI_ENV] = saved


@dataclass(frozen=True)
class ChildRun:
    """A search trial's run as its parent sees it."""

    recorder: RunRecorder
    status: RunStatus
    tags: dict[str, str]

    @property
    def run_id(self) -> str:
        return self.recorder.run_id


def find_child_run(
    target: TrackingTarget, experiment: str, parent_run_id: str | None, trial_id: str
) -> str | None:
    """The run already recorded for this trial of this search, if any. While the server is
    away, none for a search this job created: a trial restarted in the outage may then get a
    second run, where asking would have failed the search."""
    client = MlflowClient(target.uri)
    try:
        found = client.get_experiment_by_name(experiment)
    except Exception as error:
        if parent_run_id and new_runs.created_here(parent_run_id) and unreachable(error):
            return None
        raise
    if found is None:
        return None
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=(
            f"tags.`{Tag.TRIAL_ID}` = '{trial_id}' AND "
            f"tags.`{Tag.PARENT_RUN_ID}` = '{parent_run_id}'"
        ),
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def ensure_experiment(client: MlflowClient, target: TrackingTarget, name: str) -> str:
    return ensure_named_experiment(client, name, _artifact_location(target, name))


def _artifact_location(target: TrackingTarget, experiment: str) -> str | None:
    return f"{target.artifact_root}/{experiment}" if target.artifact_root else None


def find_run(target: TrackingTarget, run_id: str) -> RunRecorder | None:
    """The run with this id, or None when the store has no such run."""
    recorder = RunRecorder(target, run_id)
    try:
        recorder.status()
    except MlflowException:
        return None
    return recorder


def download_latest_checkpoint(recorder: RunRecorder) -> str | None:
    """The newest checkpoint logged on the run (`checkpoints/iteration_N`, or a search
    parent's `checkpoints/best`), downloaded to a temporary folder; None when it has none."""
    client, run_id = recorder.client, recorder.stored_id
    logged = sorted(a.path for a in client.list_artifacts(run_id, "checkpoints") if a.is_dir)
    if not logged:
        return None
    return client.download_artifacts(run_id, logged[-1], tempfile.mkdtemp(prefix="deeprig-"))


class SystemMetrics:
    """MLflow's own system-metrics logging (CPU, memory, disk, network; GPU where there is
    one) of the driver's machine, for the life of the job."""

    def __init__(self, recorder: RunRecorder, sampling_interval_s: float = 5.0):
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self._monitor = SystemMetricsMonitor(
            recorder.run_id,
            sampling_interval=sampling_interval_s,
            tracking_uri=recorder.target.uri,
        )

    def __enter__(self) -> SystemMetrics:
        self._monitor.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._monitor.finish()
