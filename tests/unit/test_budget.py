"""Resource budgeting: Ray Data always keeps CPU beside the training workers."""

from __future__ import annotations

import pytest
from deeprig.cluster.resources import (
    ClusterResources,
    ResourceProblems,
    budget_trials,
    budget_workers,
)
from deeprig.spec.scaling import ScalingSpec

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


def test_a_search_runs_as_many_trials_as_half_a_cpu_per_worker_allows():
    concurrency, budget = budget_trials(ScalingSpec(num_workers=1), TWO_CPUS, 8, None)
    assert (concurrency, budget.cpus_per_worker, budget.threads_per_worker) == (2, 0.5, 1)
    assert budget.data_cpus == 1.0


def test_a_search_never_runs_more_trials_at_a_time_than_it_has():
    concurrency, budget = budget_trials(
        ScalingSpec(num_workers=2), ClusterResources(16, 0, 16), 3, None
    )
    assert (concurrency, budget.cpus_per_worker) == (3, 2.5)


def test_too_many_trials_at_a_time_are_refused_naming_how_many_fit():
    with pytest.raises(ResourceProblems) as info:
        budget_trials(ScalingSpec(num_workers=2), TWO_CPUS, 40, 20)
    assert info.value.problems[0].path == "search.max_concurrent_trials"
    assert "use at most 1" in info.value.problems[0].message
