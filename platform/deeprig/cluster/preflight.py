"""Checks that only matter on a multi-node cluster: every node must reach the tracking
store and the checkpoints. The embedded SQLite store and the deeprig home folder live on
one node; a job spread over several would record into a store that other nodes cannot
see, or lose checkpoints written by a worker on another node."""

from __future__ import annotations

from deeprig.cluster.resources import ClusterResources
from deeprig.spec.errors import Problem, SpecError
from deeprig.tracking.store import configured_storage, is_node_local_uri


def check_shared_state(
    spec, resources: ClusterResources, tracking_uri: str | None, storage: str | None
) -> None:
    """Raise SpecError when a job bound for a multi-node cluster would keep its runs or its
    checkpoints on one node. `tracking_uri` / `storage`: what the job will use (None: the
    embedded defaults under the deeprig home folder)."""
    if resources.nodes <= 1:
        return
    where = f"{resources.where} has {resources.nodes} nodes"
    problems: list[Problem] = []
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
    field = _storage_field(spec)
    if field and storage is None:
        problems.append(
            Problem(
                field,
                f"{where}, but checkpoints would be written to the deeprig home folder of "
                f"each worker's node. Set {field} to storage every node sees (s3://bucket/dir, "
                "or an NFS path), or submit with --storage",
            )
        )
    if problems:
        raise SpecError(problems)


def check_connected_cluster(spec, resources: ClusterResources, target) -> None:
    """`check_shared_state` for a job already running on the cluster (its driver's
    environment says where runs and checkpoints go)."""
    check_shared_state(
        spec, resources, target.uri if target else None, configured_storage(storage_setting(spec))
    )


def _storage_field(spec) -> str | None:
    """The spec field naming where Ray Train keeps the job's checkpoints; None for rl jobs
    and searches over rl (the driver / Tune keep those, and MLflow gets a copy)."""
    if spec.kind == "train":
        return "checkpoint.storage"
    if spec.kind == "tune" and spec.base.kind == "train":
        return "base.checkpoint.storage"
    return None


def storage_setting(spec) -> str | None:
    """The checkpoint storage a spec names itself, if any."""
    field = _storage_field(spec)
    if field is None:
        return None
    return (spec if spec.kind == "train" else spec.base).checkpoint.storage
