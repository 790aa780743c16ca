"""Elastic jobs (`scaling.num_workers: {min, max}`): the spec's range and what it cannot be
combined with (exit 2 before anything starts), the batch each worker takes at each size,
the worker budget of a range, and the sizes and restarts a run records."""

from __future__ import annotations

from pathlib import Path

import pytest
from deeprig.cli import app
from deeprig.cluster.resources import ClusterResources, ResourceProblems, budget_workers
from deeprig.runners.train_trainer import ray_num_workers
from deeprig.spec import SpecError, load_spec_text
from deeprig.spec.scaling import ScalingSpec, WorkerRange
from deeprig.spec.train import TrainSpec
from deeprig.tracking.report_logger import EpochMetricsLogger, WorldSizes
from deeprig.tracking.tags import Tag
from typer.testing import CliRunner

from tests.unit.test_report_logger import RecordingSink

BASE = """\
name: t
kind: train
model: {name: mlp}
data: {source: "builtin:digits"}
optim: {num_epochs: 2, batch_size: 24}
"""


def spec_with(*overrides: str) -> TrainSpec:
    spec = load_spec_text(BASE, list(overrides), source="job.yaml")
    assert isinstance(spec, TrainSpec)
    return spec


def problems_of(*overrides: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec_text(BASE, list(overrides), source="job.yaml")
    return [f"{p.path}: {p.message}" for p in info.value.problems]


def test_a_plain_number_stays_a_fixed_size():
    scaling = spec_with("scaling.num_workers=2").scaling
    assert not scaling.elastic and (scaling.min_workers, scaling.max_workers) == (2, 2)
    assert ray_num_workers(scaling) == 2


def test_a_range_is_elastic_and_goes_to_ray_as_a_tuple():
    scaling = spec_with("scaling.num_workers={min: 1, max: 4}").scaling
    assert scaling.elastic and scaling.num_workers == WorkerRange(min=1, max=4)
    assert ray_num_workers(scaling) == (1, 4)
    assert scaling.described() == "1-4 (elastic)"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("{min: 3, max: 2}", "scaling.num_workers: min (3) must be <= max (2)"),
        ("{min: 0, max: 2}", "scaling.num_workers: min must be >= 1 (got 0)"),
        ("{min: 2}", "scaling.num_workers: max field required"),
        ("0", "scaling.num_workers: must be >= 1 (got 0), or {min: 1, max: 4}"),
        ("two", "scaling.num_workers: a number of workers, or {min: 1, max: 4}"),
    ],
)
def test_a_bad_range_is_one_problem_naming_the_field(value, says):
    problems = problems_of(f"scaling.num_workers={value}")
    assert len(problems) == 1 and problems[0].startswith(says), problems


def test_the_global_batch_is_kept_by_the_per_worker_batch():
    spec = spec_with("scaling.num_workers={min: 1, max: 4}")  # batch 24 at 4 workers: 96 rows
    assert spec.effective_batch_size == 96
    assert {n: spec.batch_per_worker(n) for n in (1, 2, 3, 4)} == {1: 96, 2: 48, 3: 32, 4: 24}
    assert all(n * spec.batch_per_worker(n) == 96 for n in (1, 2, 3, 4))


def test_without_keep_global_batch_each_worker_keeps_its_batch():
    spec = spec_with("scaling={num_workers: {min: 1, max: 4}, keep_global_batch: false}")
    assert [spec.batch_per_worker(n) for n in (1, 2, 3, 4)] == [24, 24, 24, 24]
    assert spec_with("scaling.num_workers=2").batch_per_worker(2) == 24  # fixed: as given


def test_a_global_batch_that_does_not_divide_names_the_sizes():
    # 20 x 4 = 80 rows: not divisible over 3 workers
    (problem,) = problems_of("optim.batch_size=20", "scaling.num_workers={min: 1, max: 4}")
    assert problem.startswith("scaling.keep_global_batch:")
    assert "80 rows" in problem and "over 3 worker(s)" in problem
    assert "keep_global_batch: false" in problem  # the fix
    spec_with(
        "optim.batch_size=20", "scaling={num_workers: {min: 1, max: 4}, keep_global_batch: false}"
    )


def test_an_elastic_job_refuses_mid_epoch_checkpoints():
    (problem,) = problems_of("scaling.num_workers={min: 1, max: 2}", "checkpoint.every_n_steps=5")
    assert problem.startswith("checkpoint.every_n_steps:") and "elastic" in problem


TWO_NODES = ClusterResources(cpus=4, gpus=0, max_node_cpus=2, nodes=2, where="the cluster")


def test_a_range_is_budgeted_at_max_and_refused_only_when_min_cannot_fit():
    # 6 workers never fit 4 CPUs at once, but a range from 2 can start and grow as nodes join
    budget = budget_workers(ScalingSpec(num_workers=WorkerRange(min=2, max=6)), TWO_NODES)
    assert budget.cpus_per_worker * 6 <= 4 - 1 + 1e-9
    with pytest.raises(ResourceProblems) as info:
        budget_workers(ScalingSpec(num_workers=WorkerRange(min=5, max=6)), TWO_NODES)
    assert info.value.problems[0].path == "scaling.num_workers"


def test_strict_spread_over_more_workers_than_nodes_is_refused():
    spread = ScalingSpec(num_workers=WorkerRange(min=3, max=4), placement_strategy="STRICT_SPREAD")
    with pytest.raises(ResourceProblems) as info:
        budget_workers(spread, TWO_NODES)
    (problem,) = info.value.problems
    assert problem.path == "scaling.placement_strategy" and "has 2" in problem.message
    ok = ScalingSpec(num_workers=WorkerRange(min=2, max=4), placement_strategy="STRICT_SPREAD")
    budget_workers(ok, TWO_NODES)


def test_validate_prints_the_range_and_refuses_it_with_exit_2(tmp_path: Path, deeprig_home):
    job = tmp_path / "job.yaml"
    job.write_text(BASE + "scaling: {num_workers: {min: 1, max: 2}}\n")
    ok = CliRunner().invoke(app, ["validate", str(job)], env={"COLUMNS": "200"})
    assert ok.exit_code == 0, ok.output
    assert "1-2 (elastic) worker(s)" in ok.output
    bad = CliRunner().invoke(app, ["validate", str(job), "--set", "scaling.num_workers.min=3"])
    assert bad.exit_code == 2
    assert "scaling.num_workers: min (3) must be <= max (2)" in " ".join(bad.output.split())


def epoch_report(logger: EpochMetricsLogger, epoch: int, world_size: int) -> None:
    logger.after_report(None, [{"epoch": float(epoch), "val_loss": 1.0}] * world_size, None)


def test_each_epoch_records_its_world_size_and_batch_and_the_run_its_sizes():
    sink = RecordingSink()
    spec = spec_with("scaling.num_workers={min: 1, max: 2}")
    logger = EpochMetricsLogger(sink, 6, WorldSizes(spec.batch_per_worker))  # type: ignore[arg-type]
    epoch_report(logger, 1, 2)
    epoch_report(logger, 2, 2)
    logger.after_exception(None, {1: RuntimeError("worker died")})
    epoch_report(logger, 2, 1)  # the restarted group's replay of its checkpoint's epoch
    epoch_report(logger, 3, 1)
    epoch_report(logger, 3, 2)  # grown back: the resize's replay
    epoch_report(logger, 4, 2)
    assert sorted(sink.points) == [0, 1, 2, 3]  # every epoch once
    assert [sink.points[s]["world_size"] for s in range(4)] == [2.0, 2.0, 1.0, 2.0]
    assert sink.points[2]["batch_per_worker"] == 48.0 and sink.points[3]["batch_per_worker"] == 24
    assert sink.tags[Tag.WORLD_SIZES] == "2,1,2"
    assert sink.tags[Tag.RESTARTS] == "1"


def test_a_fixed_size_job_records_no_sizes():
    sink = RecordingSink()
    logger = EpochMetricsLogger(sink, 2)  # type: ignore[arg-type]
    epoch_report(logger, 1, 2)
    assert "world_size" not in sink.points[0] and Tag.WORLD_SIZES not in sink.tags


class RunningState:
    """Stand-ins named as Ray Train's controller states: the callback reads only names."""


class RestartingState:
    pass


def waiting_callback(monkeypatch, limit_s: float, nodes: list[list[dict]]):
    from deeprig.runners import resource_wait

    clock = {"now": 0.0}
    monkeypatch.setattr(resource_wait.time, "monotonic", lambda: clock["now"])
    views = iter(nodes)
    monkeypatch.setattr(
        resource_wait, "_nodes", lambda: [resource_wait.NodeView.of(n) for n in next(views)]
    )
    needs = resource_wait.WorkerNeeds(3, 0.5, 0.0, one_node_each=True)
    return resource_wait.WaitForResources(limit_s, needs), clock


def node(node_id: str, address: str, alive: bool = True) -> dict:
    return {
        "NodeID": node_id,
        "NodeManagerAddress": address,
        "Alive": alive,
        "Resources": {"CPU": 1.0},
    }


def test_a_job_waiting_for_room_past_its_limit_fails_naming_the_lost_node(monkeypatch):
    from deeprig.failures import FailureClass, JobFailure

    three = [
        node("aaaa1111", "127.0.0.1"),
        node("bbbb2222", "127.0.0.2"),
        node("cccc3333", "127.0.0.3"),
    ]
    after = [three[0], three[1], node("cccc3333", "127.0.0.3", alive=False)]
    callback, clock = waiting_callback(monkeypatch, 30, [three, after])
    callback.after_controller_start(None)
    callback.after_controller_state_update(None, RunningState())
    callback.after_controller_state_update(None, RestartingState())  # its node died
    clock["now"] = 20.0
    callback.after_controller_state_update(None, RestartingState())  # within the limit
    clock["now"] = 31.0
    with pytest.raises(JobFailure) as info:
        callback.after_controller_state_update(None, RestartingState())
    failure = info.value
    assert failure.kind == FailureClass.WORKER_LOST
    assert "nodes lost: 127.0.0.3 (cccc3333, 1 CPU)" in failure.detail
    assert "3 worker(s) x 0.5 CPU on 3 nodes (STRICT_SPREAD)" in failure.detail
    assert "the cluster now has 2 node(s), 2 CPU" in failure.detail


def test_running_again_within_the_limit_resets_the_wait(monkeypatch):
    callback, clock = waiting_callback(monkeypatch, 30, [[node("aaaa1111", "127.0.0.1")]])
    callback.after_controller_start(None)
    callback.after_controller_state_update(None, RestartingState())
    clock["now"] = 25.0
    callback.after_controller_state_update(None, RunningState())  # a node came back
    callback.after_controller_state_update(None, RestartingState())
    clock["now"] = 50.0
    callback.after_controller_state_update(None, RestartingState())  # 25 s of this wait


def test_a_collective_broken_by_a_lost_peer_is_the_workers_loss_and_retried():
    # What a surviving DDP rank raises when the node of another dies (gloo, on this machine)
    from deeprig.failures import RETRIED_BY_DEFAULT, FailureClass, classify

    error = RuntimeError(
        "[../third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:32452: "
        "Connection reset by peer. This is typically caused by a remote worker hanging"
    )
    assert classify(error).kind == FailureClass.WORKER_LOST
    assert FailureClass.WORKER_LOST in RETRIED_BY_DEFAULT
    assert classify(RuntimeError("shape mismatch")).kind == FailureClass.UNKNOWN
