"""Resource budgeting: Ray Data always keeps CPU beside the training workers."""

from __future__ import annotations

import pytest
from deeprig.cluster.resources import ClusterResources, ResourceProblems, budget_workers
from deeprig.spec.train import ScalingSpec

TWO_CPUS = ClusterResources(cpus=2, gpus=0, max_node_cpus=2)


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_leave_a_cpu_for_ray_data_on_2_cpus(workers):
    budget = budget_workers(ScalingSpec(num_workers=workers), TWO_CPUS)
    assert workers * budget.cpus_per_worker <= 2 - 1.0 + 1e-9
    assert budget.data_cpus <= 2 - workers * budget.cpus_per_worker + 1e-9
    assert budget.threads_per_worker == 1


def test_big_machine_gives_workers_several_threads():
    budget = budget_workers(ScalingSpec(num_workers=2), ClusterResources(16, 0, 16))
    assert budget.cpus_per_worker == 7.5 and budget.threads_per_worker == 7


def test_explicit_cpus_that_starve_ray_data_are_refused():
    with pytest.raises(ResourceProblems) as info:
        budget_workers(ScalingSpec(num_workers=2, cpus_per_worker=1.0), TWO_CPUS)
    assert info.value.problems[0].path == "scaling.cpus_per_worker"


def test_gpu_workers_get_a_gpu_each():
    budget = budget_workers(ScalingSpec(num_workers=2, use_gpu=True), ClusterResources(8, 2, 8))
    assert budget.resources_per_worker()["GPU"] == 1.0
