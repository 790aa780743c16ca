"""Where the Ray Train controller's logger records each report: deeprig's loop at its
epoch less one, the user's own loop at its `step` or its `epoch` as given; what it cannot
place is named on the run, a restart's replay is never recorded twice, and rank 0's params
(its first report's) are logged as params, not metrics."""

from __future__ import annotations

from typing import Any

from deeprig.report_keys import WORKER_PARAMS
from deeprig.tracking.report_logger import EpochMetricsLogger
from deeprig.tracking.tags import Tag


class RecordingSink:
    """The sink's surface the logger uses, holding what an MLflow run would."""

    def __init__(self, held: dict[str, list[int]] | None = None):
        self.points: dict[int, dict[str, float]] = {}
        self.tags: dict[str, str] = {}
        self.params: list[dict[str, str]] = []
        self.held = held or {}

    def newest_step(self, key: str) -> int:
        return max(self.held.get(key, []), default=-1)

    def log(self, metrics: dict[str, float], step: int, timestamp: float | None = None) -> None:
        assert step not in self.points, f"step {step} logged twice"
        self.points[step] = metrics

    def tag(self, key: str, value: str) -> None:
        self.tags[key] = value

    def log_params(self, params: dict[str, str]) -> None:
        self.params.append(params)

    def flush(self) -> None:
        pass


def report(logger: EpochMetricsLogger, **metrics: Any) -> None:
    logger.after_report(None, [metrics], None)


def user_loop(sink: RecordingSink) -> EpochMetricsLogger:
    return EpochMetricsLogger(sink, None)  # type: ignore[arg-type]


def test_a_loop_counting_epochs_from_0_keeps_its_first_epoch():
    sink = RecordingSink()
    logger = user_loop(sink)
    for epoch in range(3):
        report(logger, epoch=epoch, loss=1.0 / (epoch + 1))
    assert sorted(sink.points) == [0, 1, 2]
    assert sink.points[0]["loss"] == 1.0
    assert Tag.UNPLACED_REPORTS not in sink.tags


def test_a_loop_counting_epochs_from_1_is_recorded_as_it_counts():
    sink = RecordingSink()
    logger = user_loop(sink)
    for epoch in (1, 2, 3):
        report(logger, epoch=epoch, loss=0.5)
    assert sorted(sink.points) == [1, 2, 3]


def test_a_reported_step_places_the_report_before_its_epoch():
    sink = RecordingSink()
    logger = user_loop(sink)
    for step in (10, 20, 30):
        report(logger, epoch=0, step=step, loss=0.5)
    assert sorted(sink.points) == [10, 20, 30]
    assert Tag.UNPLACED_REPORTS not in sink.tags


def test_a_repeated_epoch_is_named_on_the_run_not_recorded_twice():
    sink = RecordingSink()
    logger = user_loop(sink)
    for epoch in (0, 1, 1, 2):
        report(logger, epoch=epoch, loss=float(epoch))
    assert sorted(sink.points) == [0, 1, 2]
    assert "repeating a step already recorded (1)" in sink.tags[Tag.UNPLACED_REPORTS]


def test_reports_without_epoch_or_step_are_kept_in_order_and_named():
    sink = RecordingSink()
    logger = user_loop(sink)
    for loss in (0.9, 0.8, 0.7):
        report(logger, loss=loss)
    assert [sink.points[s]["loss"] for s in sorted(sink.points)] == [0.9, 0.8, 0.7]
    assert "without `epoch` or `step` (the first: report 1)" in sink.tags[Tag.UNPLACED_REPORTS]


def test_a_restarted_loops_replay_is_neither_recorded_again_nor_a_warning():
    sink = RecordingSink()
    logger = user_loop(sink)
    for epoch in (0, 1, 2):
        report(logger, epoch=epoch, loss=1.0)
    logger.after_exception(None, {0: RuntimeError("worker lost")})
    for epoch in (1, 2, 3):  # resumed from the checkpoint of epoch 0
        report(logger, epoch=epoch, loss=2.0)
    assert sorted(sink.points) == [0, 1, 2, 3]
    assert sink.points[2]["loss"] == 1.0 and sink.points[3]["loss"] == 2.0
    assert Tag.UNPLACED_REPORTS not in sink.tags


def test_a_resumed_run_skips_the_epochs_it_holds_without_a_warning():
    sink = RecordingSink(held={"epoch": [0, 1, 2]})
    logger = user_loop(sink)
    for epoch in (2, 3):
        report(logger, epoch=epoch, loss=1.0)
    assert sorted(sink.points) == [3]
    assert Tag.UNPLACED_REPORTS not in sink.tags


def test_deeprigs_own_loop_records_its_1_based_epoch_at_step_epoch_less_1():
    sink = RecordingSink(held={"epoch": [0]})
    logger = EpochMetricsLogger(sink, 3)  # type: ignore[arg-type]
    for epoch in (1, 2, 3):  # epoch 1 replayed after a restart: already held
        report(logger, epoch=epoch, train_loss=0.1)
    report(logger, step_checkpoint=1, train_loss=0.1)
    assert sorted(sink.points) == [1, 2]


def test_a_search_records_a_loops_trials_at_the_epoch_it_reports():
    from deeprig.report_keys import ENDED_AT
    from deeprig.runners.tune.train_trial import TRAIN_BASE

    step_of = TRAIN_BASE.reports.step_of
    assert step_of({"epoch": 0.0, "loss": 1.0}, 1) == 0  # the user's loop, from 0
    assert step_of({"epoch": 1.0, ENDED_AT: 1.0e9}, 1) == 0  # deeprig's loop, from 1
    assert step_of({"step": 40.0, "epoch": 0.0}, 1) == 40
    assert step_of({"loss": 1.0}, 3) == 2  # neither: in the order reported


def test_the_controller_logs_rank_0s_params_from_its_first_report_and_not_as_metrics():
    sink = RecordingSink()
    logger = EpochMetricsLogger(sink, num_epochs=2)  # type: ignore[arg-type]
    learned = {"flops_per_sample": "1e+06", "peak_flops_source": "measured"}
    logger.after_report(None, [{"epoch": 1, "loss": 0.5, WORKER_PARAMS: learned}, {}], None)
    logger.after_report(None, [{"epoch": 2, "loss": 0.4}, {}], None)
    assert sink.params == [learned]
    assert sink.points == {0: {"epoch": 1.0, "loss": 0.5}, 1: {"epoch": 2.0, "loss": 0.4}}
