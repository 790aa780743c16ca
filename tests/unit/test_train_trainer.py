"""A train spec as Ray Train's TorchTrainer (deeprig.runners.train_trainer): the run's name,
storage, retries, scaling and checkpoint ranking come from the spec, and the controller's
callbacks follow what the spec asks for. The trainer is built, never fitted: no Ray starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from deeprig.cluster.resources import ClusterResources
from deeprig.failures import FailureClass
from deeprig.runners import train
from deeprig.runners.preemptions import CountPreemptions
from deeprig.runners.resource_wait import WaitForResources
from deeprig.runners.retries import EndUnlessRetried
from deeprig.runners.train_trainer import build_trainer, controller_callbacks, train_run_name
from deeprig.spec.loader import load_spec
from deeprig.tracking.report_logger import EpochMetricsLogger, SinkWarmUp
from deeprig.tracking.sink import MlflowMetricsSink
from deeprig.training.user_loop import DEEPRIG_KEY
from ray.train import UserCallback

from tests.conftest import JOBS

CPU = ClusterResources(cpus=2, gpus=0, max_node_cpus=2)


def _checked(*overrides: str, job: Path = JOBS / "raydocs_loop.yaml"):
    return train.check(load_spec(job, list(overrides)), CPU)


def test_the_trainer_carries_the_specs_run_retries_scaling_and_the_users_loop_config(
    ray_never_started,
):
    checked = _checked("failure.max_failures=2")
    spec, own = checked.spec, UserCallback()
    trainer = build_trainer(spec, checked, None, "0123456789ab", None, "/tmp/ckpt", "run-x", [own])
    run = trainer.run_config
    assert (run.name, run.storage_path, run.failure_config.max_failures) == (
        "run-x",
        "/tmp/ckpt",
        2,
    )
    ranking = run.checkpoint_config
    assert (ranking.checkpoint_score_attribute, ranking.checkpoint_score_order) == (
        "accuracy",
        "max",
    )
    # The caller's callbacks first (a trial's TuneReportCallback), then the controller's.
    assert [type(c) for c in run.callbacks] == [UserCallback, WaitForResources, EndUnlessRetried]
    assert run.callbacks[-1].policy.retry_on == frozenset(
        {FailureClass.WORKER_LOST, FailureClass.INFRASTRUCTURE}
    )
    assert trainer.scaling_config.num_workers == 2
    assert trainer.scaling_config.resources_per_worker == checked.budget.resources_per_worker()
    # The user's loop gets exactly its own config, deeprig's part under its own key.
    config = trainer.train_loop_config
    assert {k: v for k, v in config.items() if k != DEEPRIG_KEY} == spec.loop.config
    assert config[DEEPRIG_KEY]["function"] == "raydocs_loop:train_func"
    assert not trainer.datasets  # (it loads its own data)


@pytest.mark.parametrize(
    ("overrides", "tracked", "expected"),
    [
        (["failure.max_failures=0"], False, [WaitForResources]),
        (["failure.max_failures=1"], False, [WaitForResources, EndUnlessRetried]),
        (
            ["failure.max_failures=0"],
            True,
            [WaitForResources, SinkWarmUp, EpochMetricsLogger, CountPreemptions],
        ),
    ],
)
def test_the_controller_retries_only_when_restarts_are_allowed_and_logs_only_with_a_sink(
    overrides, tracked, expected
):
    checked = _checked(*overrides)
    sink = MlflowMetricsSink("file:/nowhere", "run") if tracked else None
    assert [type(c) for c in controller_callbacks(checked.spec, checked.budget, sink)] == expected


def test_a_train_run_is_named_after_its_mlflow_run_so_resume_finds_it():
    spec = _checked().spec
    assert train_run_name(spec, "0123456789ab") == "raydocs-loop-01234567"
    assert train_run_name(spec, None).startswith("raydocs-loop-")
