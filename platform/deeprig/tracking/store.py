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


def resolve_tracking(spec_uri: str | None, home: Path | None = None) -> TrackingTarget:
    """spec `tracking.uri` > $MLFLOW_TRACKING_URI > the embedded store."""
    uri = spec_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return TrackingTarget(uri, None)
    return embedded_target(home or deeprig_home())
