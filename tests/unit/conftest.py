"""Shared fixtures of the unit tests: what the cluster configs and the deploy manifests are
checked against (the lock's versions, the project's metadata), a user's module with
real frames (failure classification), and the training loop's surroundings in-process
(`InProcessSession`, `EventSink`: a worker with no Ray and a run with no MLflow), and a
tracking server that goes away (`FlakyTrackingServer`)."""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable

import pytest
import torch
from deeprig.training.state import TrainState

from tests.conftest import REPO


class InProcessSession:
    """training/session.py's `WorkerSession` for one worker, no Ray: keeps every report it
    is handed, epochs' and mid-epoch checkpoints' alike, and hands back `restored`."""

    rank, world_size = 0, 1

    def __init__(self, restored: TrainState | None = None):
        self.restored = restored
        self.preempted_from_epoch: int | None = None  # a notice from this epoch's end on
        self.epochs_ended = 0
        self.reports: list[tuple[dict[str, float], TrainState | None]] = []
        self.step_checkpoints: list[tuple[dict[str, float], TrainState | None]] = []

    def device(self) -> torch.device:
        return torch.device("cpu")

    def prepare_model(self, model):
        return model

    def dataset(self, name: str):
        raise AssertionError("the splits are in memory")

    def restore(self) -> TrainState | None:
        return self.restored

    def report(self, metrics, state) -> None:
        # (a copy, as a checkpoint on disk is: the state's tensors are the live model's)
        self.reports.append((dict(metrics), copy.deepcopy(state)))

    def report_step_checkpoint(self, metrics, state) -> None:
        self.step_checkpoints.append((dict(metrics), copy.deepcopy(state)))

    def preemption_notice(self) -> bool:
        """Asked once at each epoch's end."""
        self.epochs_ended += 1
        start = self.preempted_from_epoch
        return start is not None and self.epochs_ended > start


class EventSink:
    """training/worker_config.py's `MetricsSink`, keeping what reaches it in order:
    ("step", step, metrics), ("tag", key, value), ("flush",)."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def log(self, metrics, step) -> None:
        self.events.append(("epoch", step, dict(metrics)))

    def log_step(self, metrics, step) -> None:
        self.events.append(("step", step, dict(metrics)))

    def tag(self, key, value) -> None:
        self.events.append(("tag", key, value))

    def flush(self) -> None:
        self.events.append(("flush",))

    def tags(self) -> dict[str, str]:
        return {event[1]: event[2] for event in self.events if event[0] == "tag"}


@pytest.fixture(scope="session")
def lock_pins() -> dict[str, str]:
    """requirements.lock as name -> version: every Ray/torch/MLflow version a file names is this."""
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        name, sep, pinned = line.partition("==")
        if sep and not line.startswith("#"):
            pins[name.strip().lower()] = pinned.strip()
    return pins


@pytest.fixture(scope="session")
def project_metadata() -> dict:
    """pyproject.toml's [project] table: the version and Python the image and configs follow."""
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


@pytest.fixture(scope="session")
def deeprig_image(project_metadata: dict) -> Callable[..., str]:
    """deeprig_image(gpu=False): the image deploy/Dockerfile builds, which every node must run."""

    def image(gpu: bool = False) -> str:
        return f"ghcr.io/deeprig/deeprig:{project_metadata['version']}" + ("-gpu" if gpu else "")

    return image


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module of the user's own (`userloop.py`, imported from its own folder) whose
    `train(config)` calls `check_labels`, which raises ValueError: real frames in a file
    that is not deeprig's."""
    import importlib
    import sys

    (tmp_path / "userloop.py").write_text(
        "def train(config):\n"
        "    for epoch in range(3):\n"
        "        check_labels(epoch)\n"
        "\n"
        "\n"
        "def check_labels(epoch):\n"
        "    if epoch == 2:\n"
        "        raise ValueError(f'labels out of range at epoch {epoch}')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "userloop", raising=False)
    return importlib.import_module("userloop")


class FlakyTrackingServer:
    """MlflowClient's writes against a tracking server with MLflow's SQL store's rules (a
    metric point is kept once per key, value, timestamp and step; a tag or a param set
    again overwrites), which can be taken `down` (each call raises what MLflow's client
    raises once its retries are spent: a connection error as a 500) or made to
    `drop_answers` (the write is stored, then the answer is lost). It makes experiments and
    runs, finds a run by a tag, and answers a metric's history with its steps."""

    def __init__(self) -> None:
        self.down = False
        self.drop_answers = 0  # the next N writes are stored, then answered with an error
        self.calls = 0  # every write that reached the server
        self.points: dict[str, list[tuple[int, float, int]]] = {}  # key -> (step, value, ts)
        self.tags: dict[str, str] = {}
        self.params: dict[str, str] = {}
        self.artifacts: dict[str, bytes] = {}  # artifact path -> content
        self.inputs: list[str] = []  # names of the datasets logged
        self.status = "RUNNING"
        self.experiments: dict[str, str] = {}  # name -> id
        self.runs: dict[str, dict[str, str]] = {}  # run id -> its tags at creation
        self.written_to: set[str] = set()  # the run ids writes named

    def get_experiment_by_name(self, name):
        from types import SimpleNamespace

        self._reach()
        found = self.experiments.get(name)
        return SimpleNamespace(experiment_id=found, lifecycle_stage="active") if found else None

    def create_experiment(self, name, artifact_location=None, tags=None) -> str:
        self._reach()
        self.experiments[name] = str(len(self.experiments) + 1)
        return self.experiments[name]

    def create_run(self, experiment_id, start_time=None, tags=None, run_name=None):
        from types import SimpleNamespace

        self._reach()
        run_id = f"{len(self.runs) + 1:032x}"
        self.runs[run_id] = dict(tags or {})
        self._answer()
        return SimpleNamespace(info=SimpleNamespace(run_id=run_id))

    def search_runs(self, experiment_ids, filter_string="", max_results=1000):
        """Only `tags.`KEY` = 'VALUE'` filters, as deeprig's look-ups write them."""
        import re
        from types import SimpleNamespace

        self._reach()
        key, value = re.fullmatch(r"tags\.`(.+)` = '(.*)'", filter_string).groups()
        found = [r for r, tags in self.runs.items() if tags.get(key) == value]
        return [SimpleNamespace(info=SimpleNamespace(run_id=r)) for r in found[:max_results]]

    def get_run(self, run_id):
        from types import SimpleNamespace

        self._reach()
        data = SimpleNamespace(tags=dict(self.tags), params=dict(self.params), metrics={})
        return SimpleNamespace(info=SimpleNamespace(run_id=run_id, status=self.status), data=data)

    def get_metric_history(self, run_id, key):
        from types import SimpleNamespace

        self._reach()
        return [SimpleNamespace(step=step) for step, _, _ in self.points.get(key, [])]

    def log_inputs(self, run_id, datasets=()) -> None:
        self._reach()
        self.written_to.add(run_id)
        self.inputs += [d.dataset.name for d in datasets]
        self._answer()

    def _reach(self) -> None:
        if self.down:
            from mlflow.exceptions import MlflowException

            raise MlflowException(
                "API request to http://127.0.0.1:1/ failed with exception "
                "ConnectionError: Connection refused"
            )
        self.calls += 1

    def _answer(self) -> None:
        if self.drop_answers:
            self.drop_answers -= 1
            import requests

            raise requests.ConnectionError("Connection reset by peer")

    def log_batch(self, run_id, metrics=(), params=(), tags=()) -> None:
        self._reach()
        self.written_to.add(run_id)
        for m in metrics:
            point = (m.step, m.value, m.timestamp)
            if point not in self.points.setdefault(m.key, []):
                self.points[m.key].append(point)
        self.params |= {p.key: p.value for p in params}
        self.tags |= {t.key: t.value for t in tags}
        self._answer()

    def log_artifact(self, run_id, local, artifact_path=None) -> None:
        from pathlib import Path

        self._reach()
        self.written_to.add(run_id)
        name = Path(local).name
        key = f"{artifact_path}/{name}" if artifact_path else name
        self.artifacts[key] = Path(local).read_bytes()
        self._answer()

    def log_artifacts(self, run_id, local, artifact_path=None) -> None:
        from pathlib import Path

        self._reach()
        for path in sorted(Path(local).rglob("*")):
            if path.is_file():
                relative = str(path.relative_to(local))
                key = f"{artifact_path}/{relative}" if artifact_path else relative
                self.artifacts[key] = path.read_bytes()
        self._answer()

    def set_terminated(self, run_id, status="FINISHED", end_time=None) -> None:
        self._reach()
        self.written_to.add(run_id)
        self.status = status
        self._answer()

    def update_run(self, run_id, status=None, name=None) -> None:
        self._reach()
        self.status = status or self.status
        self._answer()


@pytest.fixture
def flaky_server() -> FlakyTrackingServer:
    return FlakyTrackingServer()


@pytest.fixture
def ray_never_started(monkeypatch):
    """Fails the test if the code under test opens deeprig's Ray session or calls ray.init:
    what is refused "before Ray starts" never gets that far. Checked at those doors, not by
    `ray.is_initialized()`: in the full suite the integration tests' Ray is already up."""
    import deeprig.cluster.session as session
    import ray

    def refuse(*_args, **_kwargs):
        raise AssertionError("Ray was started (or joined) by the code under test")

    monkeypatch.setattr(session, "ray_session", refuse)
    monkeypatch.setattr(ray, "init", refuse)
