"""The training loop's components, each owning its cadence (a checkpoint due every N
epochs, every N steps and at the last; early stopping's patience; step points and when
they are sent), and the loop under the in-process fake session: a run interrupted by a
mid-epoch checkpoint and restored reports each epoch once and ends where the straight run
ended."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
import torch
from deeprig.cluster.resources import ClusterResources
from deeprig.data import build_datasets
from deeprig.report_keys import ENDED_AT
from deeprig.runners import train
from deeprig.runners.train_trainer import worker_config
from deeprig.spec.loader import load_spec
from deeprig.spec.optim import EarlyStoppingSpec
from deeprig.tracking.tags import Tag
from deeprig.training.checkpointer import Checkpointer
from deeprig.training.epoch import Position
from deeprig.training.guards import EarlyStop
from deeprig.training.loop import run_training
from deeprig.training.parts import build_parts
from deeprig.training.state import TrainState
from deeprig.training.step_metrics import StepMetrics
from deeprig.training.worker_config import WorkerConfig

from tests.unit.conftest import EventSink, InProcessSession

JOB = Path(__file__).parents[2] / "jobs" / "quickstart.yaml"
CPU = ClusterResources(cpus=2, gpus=0, max_node_cpus=2)


@cache
def _prepared():
    spec = load_spec(JOB, ["scaling.num_workers=1"])
    checked = train.check(spec, CPU)
    return checked.data, build_datasets(spec.data, checked.data, spec.seed, 1, 1, True)


def _worker(*overrides: str, run_id: str | None = None, sink=None) -> WorkerConfig:
    spec = load_spec(JOB, ["scaling.num_workers=1", *overrides])
    checked = train.check(spec, CPU)
    _, prepared = _prepared()
    return worker_config(spec, checked, prepared.fitted, run_id, sink, prepared.arrays)


def _checkpointer(
    *overrides: str,
    restored: TrainState | None = None,
    early_stop: EarlyStop | None = None,
    steps_per_epoch: int = 6,
):
    worker = _worker(*overrides)
    session = InProcessSession(restored)
    parts = build_parts(worker, session, torch.device("cpu"))
    sink = EventSink()
    early_stop = early_stop or EarlyStop(None, sink)
    step_metrics = StepMetrics(None, sink, parts.optimizer, steps_per_epoch)
    checkpointer = Checkpointer(
        worker, session, parts, early_stop, step_metrics, steps_per_epoch, sink
    )
    return checkpointer, session, sink


def _run_epoch(checkpointer: Checkpointer, epoch: int, previous: Position | None) -> Position:
    """An epoch of six optimiser steps of 32 rows each, as train_epoch advances them."""
    position = checkpointer.epoch_start(epoch, previous)
    for _ in range(6):
        position.batches_done += 1
        position.global_step += 1
        position.steps_in_epoch += 1
        position.totals += torch.tensor([0.5 * 32, 32.0])
        checkpointer.after_step(position, torch.tensor(0.5))
    return position


def test_an_epoch_checkpoint_is_due_every_n_epochs_and_at_the_last():
    checkpointer, _, sink = _checkpointer("checkpoint.every_n_epochs=2")
    saved = []
    position = None
    for epoch in range(5):
        position = _run_epoch(checkpointer, epoch, position)
        state = checkpointer.save(position, {"epoch": epoch + 1}, None, last=epoch == 4)
        saved.append(state is not None and state.epoch)
    assert saved == [False, 1, False, 3, 4]
    assert sink.events.count(("flush",)) == 3  # the step points out before each exists


def test_a_mid_epoch_checkpoint_every_n_steps_never_on_an_epochs_last_step():
    checkpointer, session, _ = _checkpointer("checkpoint.every_n_steps=4")
    first = _run_epoch(checkpointer, 0, None)
    checkpointer.save(first, {"epoch": 1, "val_accuracy": 0.5}, [[1, 0], [0, 1]], last=False)
    _run_epoch(checkpointer, 1, first)
    # Steps 4 and 8 (inside epochs 1 and 2); step 12 ends epoch 2: its epoch checkpoint follows.
    states = [state for _, state in session.step_checkpoints]
    assert [s.global_step for s in states] == [4, 8]
    inside = states[1]
    assert (inside.epoch, inside.batches_done, inside.epoch_totals) == (1, 2, (32.0, 64.0))
    assert inside.metrics == {"epoch": 1, "val_accuracy": 0.5}  # the last finished epoch's
    assert inside.confusion_matrix == [[1, 0], [0, 1]]
    # Ranked below every epoch's checkpoint (checkpoint.metric: val_accuracy, mode: max).
    assert session.step_checkpoints[1][0]["val_accuracy"] < -1e300


def test_no_mid_epoch_checkpoint_without_every_n_steps():
    checkpointer, session, _ = _checkpointer()
    _run_epoch(checkpointer, 0, None)
    assert session.step_checkpoints == []


def test_a_restored_mid_epoch_checkpoint_places_its_epoch_and_rank_0_carries_the_totals():
    checkpointer, session, _ = _checkpointer("checkpoint.every_n_steps=4")
    _run_epoch(checkpointer, 0, None)
    restored = session.step_checkpoints[0][1]
    again, *_ = _checkpointer("checkpoint.every_n_steps=4", restored=restored)
    position = again.epoch_start(0, None)
    assert (position.batches_done, position.global_step, position.steps_in_epoch) == (4, 4, 4)
    assert position.totals.tolist() == [64.0, 128.0] and position.rows_before == 128.0
    later = again.epoch_start(1, position)
    assert (later.batches_done, later.rows_before, later.totals.tolist()) == (0, 0.0, [0.0, 0.0])


def _early_stop(sink: EventSink, restored=None) -> EarlyStop:
    spec = EarlyStoppingSpec(metric="val_accuracy", mode="max", patience=2, min_delta=0.01)
    return EarlyStop(spec, sink, restored)


def test_early_stopping_waits_its_patience_then_tags_the_run():
    sink = EventSink()
    stop = _early_stop(sink)
    accuracies = [0.5, 0.6, 0.605, 0.609]  # +0.005, +0.009: not better by min_delta
    decisions = [
        stop.should_stop({"epoch": e + 1, "val_accuracy": a}) for e, a in enumerate(accuracies)
    ]
    assert decisions == [False, False, False, True]
    assert sink.tags() == {Tag.STOPPED_EARLY: "true", Tag.STOPPED_AT_EPOCH: "4"}


def test_a_restarted_early_stopper_waits_no_longer_and_a_disabled_one_never_stops():
    first = _early_stop(EventSink())
    first.should_stop({"epoch": 1, "val_accuracy": 0.6})
    first.should_stop({"epoch": 2, "val_accuracy": 0.6})  # one stale epoch of two
    checkpointer, _, _ = _checkpointer(early_stop=first)
    saved = checkpointer.save(_run_epoch(checkpointer, 1, None), {"epoch": 2}, None, last=True)
    assert saved is not None and (saved.early_stop_best, saved.early_stop_stale) == (0.6, 1)
    assert _early_stop(EventSink(), saved).should_stop({"epoch": 3, "val_accuracy": 0.6})
    assert not _early_stop(EventSink()).should_stop({"epoch": 3, "val_accuracy": 0.6})
    sink = EventSink()
    disabled = EarlyStop(None, sink)
    assert not any(disabled.should_stop({"epoch": e, "val_loss": 9.0}) for e in range(1, 20))
    assert sink.events == []


def test_step_points_every_n_steps_sent_before_a_checkpoint_and_at_the_end():
    sink = EventSink()
    model = torch.nn.Linear(2, 1)
    metrics = StepMetrics(2, sink, torch.optim.SGD(model.parameters(), lr=0.1), 5)
    position = Position(0)
    for _ in range(5):
        position.global_step += 1
        position.steps_in_epoch += 1
        metrics.after_step(position, torch.tensor(1.5))
        if position.global_step == 3:
            metrics.before_checkpoint()
    metrics.close()
    kinds = [(e[0], e[1]) if e[0] == "step" else e[0] for e in sink.events]
    assert kinds == [("step", 2), "flush", ("step", 4), "flush"]
    assert sink.events[0][2] == {
        "step/train_loss": 1.5,
        "step/lr": 0.1,
        "step/epoch": 1,
        "step/in_epoch": 2,
        "step/per_epoch": 5,
    }
    silent = EventSink()
    off = StepMetrics(None, silent, torch.optim.SGD(model.parameters(), lr=0.1), 5)
    off.after_step(position, torch.tensor(1.5))
    assert silent.events == []


# Digits: 1437 training rows in batches of 32, 45 optimiser steps an epoch; a mid-epoch
# checkpoint every 50 steps falls inside epoch 2 (step 50) and epoch 3 (step 100).
RESUMABLE = ("optim.num_epochs=3", "checkpoint.every_n_steps=50", "tracking.log_every_n_steps=10")


@pytest.fixture(scope="module")
def straight_run() -> tuple[InProcessSession, EventSink]:
    """Three epochs straight through, with mid-epoch checkpoints and step points."""
    sink = EventSink()
    session = InProcessSession()
    run_training(_worker(*RESUMABLE, run_id="run-1", sink=sink), session)
    return session, sink


def test_a_run_restored_inside_an_epoch_reports_each_epoch_once_and_ends_the_same(straight_run):
    straight, straight_sink = straight_run
    (_, at_step_50), _ = straight.step_checkpoints
    assert at_step_50 is not None and (at_step_50.epoch, at_step_50.global_step) == (1, 50)
    sink = EventSink()
    restored = InProcessSession(restored=at_step_50)
    run_training(_worker(*RESUMABLE, run_id="run-1", sink=sink), restored)

    epochs = [metrics["epoch"] for metrics, _ in restored.reports]
    assert epochs == [1, 2, 3]  # epoch 1 replayed (the controller logs it where it lacks it)
    replayed, replayed_state = restored.reports[0]
    assert replayed_state is None and replayed.pop(ENDED_AT) > 0
    assert replayed == at_step_50.metrics
    assert straight.reports[0][0].items() >= at_step_50.metrics.items()
    for again, first in zip(restored.reports[1:], straight.reports[1:], strict=True):
        for key in ("train_loss", "val_loss", "val_accuracy"):
            assert again[0][key] == first[0][key], key
    end, straight_end = restored.reports[-1][1], straight.reports[-1][1]
    assert end is not None and straight_end is not None
    for key, weights in straight_end.model.items():
        assert torch.equal(end.model[key], weights), key
    assert sink.tags() == {Tag.RESUMED_FROM_EPOCH: "1", Tag.RESUMED_FROM_STEP: "50"}

    # Step points: the straight run's up to step 50 were sent before its checkpoint
    # existed; the restored run sends only those after it, each step once in all.
    def points(events):
        return [e[1] for e in events if e[0] == "step" and "step/train_loss" in e[2]]

    events = straight_sink.events
    at_50 = next(i for i, e in enumerate(events) if e[0] == "step" and e[1] == 50)
    assert events[at_50 + 1] == ("flush",)
    assert points(events[: at_50 + 1]) == [10, 20, 30, 40, 50]
    assert points(sink.events) == [s for s in points(straight_sink.events) if s > 50]
