"""A bounded wait for resources (`failure.wait_for_resources_s`): a job whose workers cannot
be placed (a node lost and none joined) ends with a message naming what it lost and what it
lacks, instead of waiting forever.

Ray Train 2.60 waits without end: a fixed-size job retries its worker group's start
(`WorkerGroupStartupTimeoutError`, a controller error it retries without limit) and an
elastic one below `min` workers decides to wait, at every pass of its controller. This
controller callback sees every state the controller passes through (each pass of a waiting
elastic job; each failed start, every `RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S`, 60 s by
default, of a fixed one) and, once the workers have not run for the limit, raises the
`worker_lost` failure: an error raised from a callback is a `ControllerError` the failure
policy never retries, and the driver finds the failure inside it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ray.train.v2._internal.execution.callback import ControllerCallback

from deeprig.failures import FailureClass, JobFailure

# The controller's states in which its workers are placed and training (or ending; or
# training on while a node is drained with notice: Ray Train bounds that by the deadline).
_NOT_WAITING = frozenset(
    {
        "RunningState",
        "PreemptingState",
        "ShuttingDownState",
        "FinishedState",
        "ErroredState",
        "AbortedState",
    }
)


@dataclass(frozen=True)
class WorkerNeeds:
    """What the job's smallest worker group asks the cluster for."""

    workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    one_node_each: bool  # STRICT_SPREAD

    def describe(self) -> str:
        gpus = f" + {self.gpus_per_worker:g} GPU" if self.gpus_per_worker else ""
        spread = f" on {self.workers} nodes (STRICT_SPREAD)" if self.one_node_each else ""
        return f"{self.workers} worker(s) x {self.cpus_per_worker:g} CPU{gpus}{spread}"


@dataclass(frozen=True)
class NodeView:
    """A node as the cluster reports it (ray.nodes())."""

    node_id: str
    name: str  # (`cluster up` names its nodes by role: on one machine they share an address)
    address: str
    alive: bool
    cpus: float
    gpus: float

    @staticmethod
    def of(entry: dict[str, Any]) -> NodeView:
        resources = entry.get("Resources") or {}
        return NodeView(
            node_id=str(entry.get("NodeID", "")),
            name=str(entry.get("NodeName", "")),
            address=str(entry.get("NodeManagerAddress", "")),
            alive=bool(entry.get("Alive")),
            cpus=float(resources.get("CPU", 0.0)),
            gpus=float(resources.get("GPU", 0.0)),
        )


def lacking(
    needs: WorkerNeeds, waited_s: float, lost: list[NodeView], alive: list[NodeView]
) -> str:
    """What the job lacks, in one message: the nodes it lost, what is left, what it needs."""
    cpus = sum(n.cpus for n in alive)
    gpus = sum(n.gpus for n in alive)
    gone = (
        ", ".join(f"{_named(n)} ({n.node_id[:8]}, {n.cpus:g} CPU)" for n in lost)
        if lost
        else "none since the job started"
    )
    have = f"{len(alive)} node(s), {cpus:g} CPU" + (f", {gpus:g} GPU" if gpus else "")
    return (
        f"no room for {needs.describe()} for {waited_s:.0f} s (failure.wait_for_resources_s); "
        f"nodes lost: {gone}; the cluster now has {have}"
    )


def _named(node: NodeView) -> str:
    named = node.name and node.name != node.address
    return f"{node.name} at {node.address}" if named else node.address


class WaitForResources(ControllerCallback):
    """On the Ray Train controller: end the run once its workers have waited `limit_s` for
    resources, naming the nodes lost since it started and what it now lacks."""

    def __init__(self, limit_s: float, needs: WorkerNeeds):
        self.limit_s = limit_s
        self.needs = needs
        self.waiting_since: float | None = None
        self.nodes_at_start: dict[str, NodeView] = {}

    def after_controller_start(self, train_run_context: Any) -> None:
        self.nodes_at_start = {n.node_id: n for n in _nodes() if n.alive}

    def after_controller_state_update(self, previous_state: Any, current_state: Any) -> None:
        now = time.monotonic()
        if type(current_state).__name__ in _NOT_WAITING:
            self.waiting_since = None
            return
        if self.waiting_since is None:
            self.waiting_since = now
            return
        if now - self.waiting_since > self.limit_s:
            nodes = {n.node_id: n for n in _nodes()}
            alive = [n for n in nodes.values() if n.alive]
            lost = [
                n
                for node_id, n in self.nodes_at_start.items()
                if node_id not in nodes or not nodes[node_id].alive
            ]
            detail = lacking(self.needs, now - self.waiting_since, lost, alive)
            raise JobFailure(FailureClass.WORKER_LOST, detail)


def _nodes() -> list[NodeView]:
    import ray

    return [NodeView.of(entry) for entry in ray.nodes()]
