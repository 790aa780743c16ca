"""deeprig's loop, restored from a checkpoint, reports the checkpoint's epoch again before
it trains on: a driver killed between an epoch's checkpoint and its metrics reaching MLflow
would otherwise leave the run without that epoch (the controller's logger records the
replay only where the run lacks it). Run in-process through the shared fake worker
session (tests/unit/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from deeprig.cluster.resources import ClusterResources
from deeprig.data import build_datasets
from deeprig.report_keys import ENDED_AT
from deeprig.runners import train
from deeprig.runners.train_trainer import worker_config
from deeprig.spec.loader import load_spec
from deeprig.training.loop import run_training
from deeprig.training.state import TrainState

from tests.unit.conftest import EventSink, InProcessSession

JOB = Path(__file__).parents[2] / "jobs" / "quickstart.yaml"


def _worker(num_epochs: int, tracked: bool):
    spec = load_spec(JOB, [f"optim.num_epochs={num_epochs}", "scaling.num_workers=1"])
    checked = train.check(spec, ClusterResources(cpus=2, gpus=0, max_node_cpus=2))
    prepared = build_datasets(spec.data, checked.data, spec.seed, 1, 1, True)
    # (tracked: the job records into a run, whose epochs a restored worker replays)
    run_id, sink = ("run-1", EventSink()) if tracked else (None, None)
    return worker_config(spec, checked, prepared.fitted, run_id, sink, prepared.arrays)


@pytest.fixture(scope="module")
def first_two_epochs() -> list[tuple[dict[str, float], TrainState | None]]:
    """(metrics, checkpoint) of each epoch of a 2-epoch run straight through."""
    session = InProcessSession()
    run_training(_worker(2, tracked=False), session)
    return session.reports


def test_a_restored_job_reports_its_checkpoints_epoch_again_then_trains_on(first_two_epochs):
    (_, first_state), (second, second_state) = first_two_epochs
    assert first_state is not None and first_state.epoch == 0
    session = InProcessSession(restored=first_state)
    run_training(_worker(2, tracked=True), session)
    epochs = [metrics["epoch"] for metrics, _ in session.reports]
    assert epochs == [1.0, 2.0]  # epoch 1 again (its checkpoint's), then epoch 2
    replayed, replayed_state = session.reports[0]
    assert replayed_state is None  # no second checkpoint of it
    assert replayed.pop(ENDED_AT) > 0 and replayed == first_state.metrics
    assert session.reports[1][0]["train_loss"] == second["train_loss"]  # the same training
    assert second_state is not None and session.reports[1][1] is not None
    for key, weights in second_state.model.items():
        assert torch.equal(session.reports[1][1].model[key], weights), key


def test_untracked_or_search_trials_get_no_replay(first_two_epochs):
    (_, first_state), _ = first_two_epochs
    session = InProcessSession(restored=first_state)
    run_training(_worker(2, tracked=False), session)  # Tune counts each report
    assert [metrics["epoch"] for metrics, _ in session.reports] == [2.0]
