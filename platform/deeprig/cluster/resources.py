"""What the cluster has, and how to split it between training workers and Ray Data.

Ray Train workers that each take a whole CPU leave Ray Data none on a small machine, and
the job hangs ("Cluster resources are not enough to run any task"). deeprig reserves CPU
for Ray Data and gives the workers fractional CPUs of the rest.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from deeprig.spec.errors import Problem
from deeprig.spec.scaling import ScalingSpec


@dataclass(frozen=True)
class ClusterResources:
    cpus: float
    gpus: float
    max_node_cpus: float  # a worker's CPUs must fit on one node
    nodes: int = 1
    where: str = "this machine"
    node_memory: float = 0.0  # bytes of the largest node's memory; 0: not known


@dataclass(frozen=True)
class WorkerBudget:
    cpus_per_worker: float
    gpus_per_worker: float
    threads_per_worker: int  # torch intra-op threads: one per CPU reserved, at least one
    data_cpus: float  # what each Ray Data task asks for

    def resources_per_worker(self) -> dict[str, float]:
        resources = {"CPU": self.cpus_per_worker}
        if self.gpus_per_worker:
            resources["GPU"] = self.gpus_per_worker
        return resources


def local_resources() -> ClusterResources:
    """This machine, as an embedded Ray will see it (without starting Ray)."""
    cpus = float(
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
    memory = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return ClusterResources(
        cpus=cpus, gpus=float(_local_gpu_count()), max_node_cpus=cpus, node_memory=memory
    )


def connected_resources() -> ClusterResources:
    """The cluster Ray is connected to."""
    import ray

    total = ray.cluster_resources()
    node_cpus = [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
    return ClusterResources(
        cpus=total.get("CPU", 0.0),
        gpus=total.get("GPU", 0.0),
        max_node_cpus=max(node_cpus, default=0.0),
        nodes=len(node_cpus),
        where="the cluster",
        # (Ray's `memory` resource: what it lets tasks and actors on the node reserve)
        node_memory=max(
            (n["Resources"].get("memory", 0.0) for n in ray.nodes() if n.get("Alive")),
            default=0.0,
        ),
    )


def _local_gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # no usable CUDA runtime is the same as no GPU
        return 0


# Below this a search's trial worker would crawl: fewer trials at a time instead.
MIN_CPUS_PER_TRIAL_WORKER = 0.1


def data_reserve(cpus: float) -> float:
    """CPUs kept free for Ray Data: one, or half of a machine smaller than two."""
    return min(1.0, cpus / 2)


def budget_workers(scaling: ScalingSpec, resources: ClusterResources) -> WorkerBudget:
    """Raise ResourceProblems when the cluster can never satisfy the request. An elastic
    job is budgeted at `max` workers (every size it grows to fits beside Ray Data) and
    refused only when its `min` can never fit (nodes may join to let it grow)."""
    n, least = scaling.max_workers, scaling.min_workers
    problems: list[Problem] = []
    if scaling.placement_strategy == "STRICT_SPREAD" and least > resources.nodes:
        problems.append(
            Problem(
                "scaling.placement_strategy",
                f"STRICT_SPREAD puts each of {least} worker(s) on its own node; "
                f"{resources.where} has {resources.nodes}. Use SPREAD, or fewer workers",
            )
        )
    if scaling.use_gpu and resources.gpus < least:
        problems.append(
            Problem(
                "scaling.use_gpu",
                f"{n} GPU worker(s) need {n} GPU(s); {resources.where} has {resources.gpus:g}. "
                "Set scaling.use_gpu: false, or run on a cluster with GPUs (--address)",
            )
        )
    if not scaling.use_gpu and least > resources.cpus:
        problems.append(
            Problem(
                "scaling.num_workers",
                f"{n} workers need at least {n} CPUs (one core each); {resources.where} has "
                f"{resources.cpus:g}. Use scaling.num_workers <= {int(resources.cpus)}",
            )
        )
    reserve = data_reserve(resources.cpus)
    available = resources.cpus - reserve
    if scaling.cpus_per_worker is not None:
        per_worker = scaling.cpus_per_worker
        if per_worker * least > available + 1e-9 or per_worker > resources.max_node_cpus:
            problems.append(
                Problem(
                    "scaling.cpus_per_worker",
                    f"{least} x {per_worker:g} CPUs plus {reserve:g} kept for Ray Data exceeds the "
                    f"{resources.cpus:g} CPUs of {resources.where}; lower it or omit it to let "
                    "deeprig budget it",
                )
            )
    else:
        # One node holds both the workers and Ray Data's reserve; on several, the reserve
        # can sit beside the workers of any node.
        node_room = resources.max_node_cpus - (reserve if resources.nodes == 1 else 0.0)
        per_worker = min(available / n, node_room)
        per_worker = math.floor(per_worker * 100) / 100
    if problems:
        raise ResourceProblems(problems)
    return _budget(max(per_worker, 0.01), scaling, resources)


def budget_trials(
    scaling: ScalingSpec, resources: ClusterResources, num_trials: int, max_concurrent: int | None
) -> tuple[int, WorkerBudget]:
    """(trials at a time, each trial's worker budget) of a search whose trials each run
    `scaling`'s workers side by side: as many trials as half a CPU per worker allows (or
    `max_concurrent`), sharing what Ray Data's reserve leaves. ResourceProblems when
    `max_concurrent` trials would leave a worker under MIN_CPUS_PER_TRIAL_WORKER."""
    n = scaling.max_workers
    available = resources.cpus - data_reserve(resources.cpus)
    fits = max(1, math.floor(available / (n * 0.5)))  # half a CPU per worker by default
    if scaling.use_gpu:
        fits = min(fits, int(resources.gpus // n))
    concurrency = min(max_concurrent or fits, num_trials)
    per_worker = math.floor(available / (concurrency * n) * 100) / 100
    if per_worker < MIN_CPUS_PER_TRIAL_WORKER:
        raise ResourceProblems(
            [
                Problem(
                    "search.max_concurrent_trials",
                    f"{concurrency} trials x {n} workers leave {per_worker:g} CPU per worker "
                    f"on {resources.where} ({resources.cpus:g} CPUs); use at most {fits}",
                )
            ]
        )
    if scaling.cpus_per_worker is not None:
        per_worker = min(per_worker, scaling.cpus_per_worker)
    return concurrency, _budget(per_worker, scaling, resources)


def _budget(per_worker: float, scaling: ScalingSpec, resources: ClusterResources) -> WorkerBudget:
    return WorkerBudget(
        cpus_per_worker=per_worker,
        gpus_per_worker=1.0 if scaling.use_gpu else 0.0,
        threads_per_worker=max(1, math.floor(per_worker + 1e-9)),
        data_cpus=min(1.0, data_reserve(resources.cpus)),
    )


class ResourceProblems(Exception):
    def __init__(self, problems: list[Problem]):
        super().__init__("; ".join(p.message for p in problems))
        self.problems = problems
