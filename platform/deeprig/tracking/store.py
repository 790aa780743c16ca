"""Where runs are stored: the embedded SQLite store under the deeprig home folder, or a
tracking server / database the spec or $MLFLOW_TRACKING_URI names."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "DEEPRIG_HOME"


def deeprig_home() -> Path:
    """One folder for everything deeprig keeps locally: MLflow store, artifacts, checkpoints.

    `$DEEPRIG_HOME`, else `~/.deeprig`."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".deeprig").expanduser().resolve()


@dataclass(frozen=True)
class TrackingTarget:
    uri: str
    # Set for the embedded store only: experiments get an absolute artifact folder, so that
    # artifacts logged from a Ray worker do not land in the worker's temporary cwd.
    artifact_root: str | None

    @property
    def is_embedded(self) -> bool:
        return self.artifact_root is not None


def embedded_target(home: Path) -> TrackingTarget:
    home.mkdir(parents=True, exist_ok=True)
    return TrackingTarget(f"sqlite:///{home / 'mlflow.db'}", (home / "mlartifacts").as_uri())


def prepare_store(target: TrackingTarget) -> None:
    """Before the first write to an embedded store: MLflow creates its "Default" experiment
    with the store, its artifacts in ./mlruns of whatever folder that happens in; made
    here, they live under the home folder. (Not at resolve time: a bad spec must leave no
    store behind.)"""
    if not target.is_embedded or not target.uri.startswith("sqlite:///"):
        return
    if Path(target.uri.removeprefix("sqlite:///")).exists():
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    SqlAlchemyStore(target.uri, target.artifact_root)


STORAGE_ENV = "DEEPRIG_STORAGE"


def configured_storage(spec_storage: str | None) -> str | None:
    """The checkpoint storage a job was given (spec, else $DEEPRIG_STORAGE); None: default."""
    return spec_storage or os.environ.get(STORAGE_ENV) or None


def checkpoint_storage(spec_storage: str | None, home: Path | None = None) -> str:
    """Where Ray Train/Tune keep checkpoints: spec `checkpoint.storage` > $DEEPRIG_STORAGE >
    `<home>/checkpoints`. A URI (s3://, gs://, ...) is returned as is; a path is made
    absolute (Ray Train refuses relative storage paths) and created."""
    root = configured_storage(spec_storage)
    if root and "://" in root:
        return root.rstrip("/")
    path = Path(root).expanduser().resolve() if root else (home or deeprig_home()) / "checkpoints"
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def is_node_local_uri(uri: str) -> bool:
    """A tracking store other nodes cannot reach: a file, a SQLite database, a bare path."""
    return uri.split("://", 1)[0] in ("sqlite", "file") or "://" not in uri


def resolve_tracking(spec_uri: str | None, home: Path | None = None) -> TrackingTarget:
    """spec `tracking.uri` > $MLFLOW_TRACKING_URI > the embedded store."""
    uri = spec_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        from deeprig.tracking.auth import sign_in_if_local_server

        sign_in_if_local_server(uri, home or deeprig_home())
        return TrackingTarget(uri, None)
    return embedded_target(home or deeprig_home())
