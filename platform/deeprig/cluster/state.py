"""What `deeprig cluster up` started, kept in `<deeprig home>/cluster/cluster.json` (0600) so
that `status`, `down` and every verb that looks for the cluster find it again from another
shell. Its own module because both the cluster (cluster/local.py) and its tracking server
(cluster/tracking_server.py) read and record it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from deeprig.tracking.store import deeprig_home, private_file


@dataclass
class LocalCluster:
    dashboard: str  # http://HOST:PORT, the Jobs API
    gcs_address: str  # HOST:PORT, for `ray start --address` and `ray.init`
    tracking_uri: str  # http://HOST:PORT of the MLflow server
    storage: str  # checkpoints: a folder every node of this machine sees
    temp_dir: str
    workers: int
    cpus_per_node: float
    process_groups: dict[str, int] = field(default_factory=dict)  # role -> pgid
    logs: str = ""
    auth: bool = False  # the tracking server asks for credentials (MLflow basic auth)

    def save(self, path: Path) -> None:
        private_file(path).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> LocalCluster:
        return cls(**json.loads(path.read_text()))

    def job_env(self) -> dict[str, str]:
        """Where a job on this cluster records runs and keeps checkpoints."""
        return {"MLFLOW_TRACKING_URI": self.tracking_uri, "DEEPRIG_STORAGE": self.storage}


def state_file(home: Path | None = None) -> Path:
    return (home or deeprig_home()) / "cluster" / "cluster.json"
