"""Where runs are stored: the embedded SQLite store under the deeprig home folder, the
tracking server of a `deeprig cluster up` cluster on this machine, or a tracking server /
database the spec or $MLFLOW_TRACKING_URI names (cluster/tracking_target.py chooses among them).

What deeprig creates here for a store or a server is its owner's alone: folders 0700,
files 0600 (`private_folder`, `private_file`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "DEEPRIG_HOME"


def deeprig_home() -> Path:
    """One folder for everything deeprig keeps locally: MLflow store, artifacts, checkpoints.

    `$DEEPRIG_HOME`, else `~/.deeprig`."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".deeprig").expanduser().resolve()


PRIVATE_FOLDER, PRIVATE_FILE = 0o700, 0o600


def private_folder(path: Path) -> Path:
    """`path` (and any missing parent under it) made, and readable by its owner only: runs,
    artifacts and checkpoints are nobody else's to read from disk."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER)
    path.chmod(PRIVATE_FOLDER)  # (mkdir's mode is masked by the umask; an old one is kept)
    return path


def private_file(path: Path) -> Path:
    """`path` made if missing, readable and writable by its owner only."""
    private_folder(path.parent)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE))
    path.chmod(PRIVATE_FILE)
    return path


@dataclass(frozen=True)
class TrackingTarget:
    uri: str
    # Set for the embedded store only: experiments get an absolute artifact folder, so that
    # artifacts logged from a Ray worker do not land in the worker's temporary cwd.
    artifact_root: str | None
    # Which rule chose it, for the line a verb that reads runs prints about where it read.
    chosen_by: str = ""

    @property
    def described(self) -> str:
        """The store and why this one: what a reading verb's header says."""
        return f"{self.uri} ({self.chosen_by})" if self.chosen_by else self.uri

    @property
    def is_embedded(self) -> bool:
        return self.artifact_root is not None


EMBEDDED = "the embedded store"


def embedded_target(home: Path) -> TrackingTarget:
    home.mkdir(parents=True, exist_ok=True)
    return TrackingTarget(
        f"sqlite:///{home / 'mlflow.db'}", (home / "mlartifacts").as_uri(), EMBEDDED
    )


def prepare_store(target: TrackingTarget) -> None:
    """Before the first write to an embedded store: MLflow creates its "Default" experiment
    with the store, its artifacts in ./mlruns of whatever folder that happens in; made
    here, they live under the home folder. The database and the artifacts are made (or,
    made before, kept) private. (Not at resolve time: a bad spec must leave no store
    behind.)"""
    if not target.is_embedded or not target.uri.startswith("sqlite:///"):
        return
    database = Path(target.uri.removeprefix("sqlite:///"))
    assert target.artifact_root is not None  # (an embedded store has one)
    private_folder(Path(target.artifact_root.removeprefix("file://")))
    existed = database.exists()
    private_file(database)  # (SQLite fills the empty file it finds; an older store's kept)
    if existed:
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
    if root:
        path = Path(root).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)  # (the user's own folder: its modes are theirs)
        return str(path)
    return str(private_folder((home or deeprig_home()) / "checkpoints"))


def is_node_local_uri(uri: str) -> bool:
    """A tracking store other nodes cannot reach: a file, a SQLite database, a bare path."""
    return uri.split("://", 1)[0] in ("sqlite", "file") or "://" not in uri


TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
