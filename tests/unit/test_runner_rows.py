"""The runner table holds every fact about a kind: a kind without one fails here, not at a
user (a skipped storage need would silently drop the multi-node checkpoint check)."""

from __future__ import annotations

import typing

import pytest
from deeprig.cluster.preflight import CheckpointStorage, check_shared_state
from deeprig.cluster.resources import ClusterResources
from deeprig.runners import RUNNERS, key_metrics_by_kind
from deeprig.runners.contract import check_on_cluster
from deeprig.spec import SpecError, load_spec
from deeprig.spec.loader import SPEC_BY_KIND
from deeprig.spec.tune import BaseSpec
from deeprig.tracking.key_metric import key_metric
from deeprig.tracking.tags import Tag

from tests.conftest import JOBS

# One job of each kind (a search over each kind of base), as `deeprig run` would load it.
EXAMPLES = {
    "train": "digits_mlp.yaml",
    "rl": "rl_ppo_cartpole.yaml",
    "tune": "tune_digits_mlp_random.yaml",
    "predict": "scoring/predict_wine.yaml",
}
THREE_NODES = ClusterResources(cpus=12, gpus=0, max_node_cpus=4, nodes=3, where="the cluster")


def test_every_kind_of_spec_has_a_runner_row_and_an_example_here():
    # (a new kind: its row in RUNNERS, and a job of it under jobs/ in EXAMPLES)
    assert RUNNERS.keys() == SPEC_BY_KIND.keys() == EXAMPLES.keys()


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_every_row_holds_every_fact_of_its_kind(kind):
    row = RUNNERS[kind]
    spec = load_spec(JOBS / EXAMPLES[kind])
    assert spec.kind == kind
    kept = row.storage(spec)
    assert kept is None or kept.field.endswith("checkpoint.storage")
    assert row.key_metrics and all(isinstance(name, str) for name in row.key_metrics)


def test_the_kinds_a_search_runs_over_are_the_rows_with_a_search_base():
    bases = typing.get_args(typing.get_args(BaseSpec)[0])
    base_kinds = {kind for kind, spec_class in SPEC_BY_KIND.items() if spec_class in bases}
    assert base_kinds == {kind for kind, row in RUNNERS.items() if row.search_base is not None}


def test_a_search_keeps_its_checkpoints_where_its_bases_kind_keeps_them():
    over_train = load_spec(JOBS / "tune_digits_mlp_random.yaml")
    over_rl = load_spec(JOBS / "tune_rl_ppo_cartpole.yaml")
    assert RUNNERS["tune"].storage(over_train) == CheckpointStorage("base.checkpoint.storage", None)
    assert RUNNERS["tune"].storage(over_rl) is None


def test_a_multi_node_job_must_keep_runs_and_checkpoints_where_every_node_reaches():
    spec = load_spec(JOBS / "digits_mlp.yaml")
    kept = RUNNERS["train"].storage(spec)
    with pytest.raises(SpecError) as info:
        check_shared_state(spec, THREE_NODES, None, kept, None)
    assert [p.path for p in info.value.problems] == ["tracking.uri", "checkpoint.storage"]
    # Given by submit's --tracking-uri / --storage (or the driver's environment): no problem.
    check_shared_state(spec, THREE_NODES, "http://head:5000", kept, "s3://bucket/ckpt")
    check_shared_state(spec, ClusterResources(2, 0, 2), None, kept, None)  # one node


def test_an_rl_job_on_several_nodes_needs_no_shared_checkpoint_storage():
    spec = load_spec(JOBS / "rl_ppo_cartpole.yaml")
    check_shared_state(spec, THREE_NODES, "http://head:5000", RUNNERS["rl"].storage(spec), None)


def test_the_cluster_pre_flight_runs_the_kinds_check_then_the_shared_state_checks():
    spec = load_spec(JOBS / "tune_digits_mlp_random.yaml")
    checked: list[object] = []

    def kinds_check(given, resources):
        checked.append(given)
        return "checked"

    assert check_on_cluster(spec, THREE_NODES, "http://head:5000", "/nfs", kinds_check) == (
        "checked"
    )
    with pytest.raises(SpecError) as info:
        check_on_cluster(spec, THREE_NODES, "http://head:5000", None, kinds_check)
    assert [p.path for p in info.value.problems] == ["base.checkpoint.storage"]
    assert checked == [spec, spec]


def test_a_run_recorded_before_the_key_metric_tag_shows_its_kinds_likeliest_metric():
    untagged = key_metrics_by_kind()
    rl_run = {Tag.KIND: "rl"}
    metrics = {"val_loss": 0.3, "episode_return_mean": 210.0}
    assert key_metric(rl_run, metrics, untagged) == ("episode_return_mean", 210.0)
    assert key_metric({Tag.KIND: "train"}, metrics, untagged) == ("val_loss", 0.3)
    assert key_metric({}, {"val_rmse": 54.26, "val_loss": 0.3}, untagged) == ("val_rmse", 54.26)
    assert key_metric({Tag.KIND: "rl"}, {"lr": 0.1}, untagged) is None
