"""Checks that only matter on a multi-node cluster: every node must reach the tracking
store and the checkpoints. The embedded SQLite store and the deeprig home folder live on
one node; a job spread over several would record into a store that other nodes cannot
see, or lose checkpoints written by a worker on another node."""

from __future__ import annotations

from dataclasses import dataclass

from deeprig.cluster.resources import ClusterResources
from deeprig.spec.errors import Problem, SpecError
from deeprig.tracking.store import is_node_local_uri


@dataclass(frozen=True)
class CheckpointStorage:
    """Where a job's Ray Train workers write their checkpoints (a kind's `Runner.storage`)."""

    field: str  # the spec field that names it: "checkpoint.storage"
    setting: str | None  # what the spec sets there; None: the deeprig home folder

    def under(self, section: str) -> CheckpointStorage:
        """The same storage named from an enclosing spec (a search's `base`)."""
        return CheckpointStorage(f"{section}.{self.field}", self.setting)


def check_shared_state(
    spec,
    resources: ClusterResources,
    tracking_uri: str | None,
    checkpoints: CheckpointStorage | None,
    storage: str | None,
) -> None:
    """Raise SpecError when a job bound for a multi-node cluster would keep its runs or its
    checkpoints on one node. `tracking_uri` / `storage`: where the job records and its
    workers checkpoint unless the spec says (None: the embedded defaults under the deeprig
    home folder); `checkpoints`: its kind's storage (None: the driver keeps them)."""
    if resources.nodes <= 1:
        return
    where = f"{resources.where} has {resources.nodes} nodes"
    problems: list[Problem] = []
    tracking_uri = spec.tracking.uri or tracking_uri
    if spec.tracking.enabled and (tracking_uri is None or is_node_local_uri(tracking_uri)):
        store = f"'{tracking_uri}'" if tracking_uri else "the embedded store"
        problems.append(
            Problem(
                "tracking.uri",
                f"{where}, but runs would be recorded in {store}, which only one node can "
                "reach. Set tracking.uri to an MLflow tracking server (http://HOST:5000), "
                "or submit with --tracking-uri",
            )
        )
    if checkpoints is not None and (checkpoints.setting or storage) is None:
        problems.append(
            Problem(
                checkpoints.field,
                f"{where}, but checkpoints would be written to the deeprig home folder of "
                f"each worker's node. Set {checkpoints.field} to storage every node sees "
                "(s3://bucket/dir, or an NFS path), or submit with --storage",
            )
        )
    if problems:
        raise SpecError(problems)
