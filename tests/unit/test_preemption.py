"""A node drained with notice (issue 28 item 3): every epoch that ends while Ray Train's
preemption notice stands is checkpointed whatever the cadence, the first one's step tagged
(training/checkpointer.py, rule 5); the controller counts the preemptions on the run
(runners/preemptions.py) and does not count its notice as a wait for resources. In-process
worker and the controller's real state types; no Ray is started."""

from __future__ import annotations

from deeprig.runners.preemptions import CountPreemptions
from deeprig.runners.resource_wait import WaitForResources, WorkerNeeds
from deeprig.tracking.tags import Tag
from ray.train.v2._internal.execution.controller.state import (
    PreemptingState,
    RunningState,
    SchedulingState,
)
from ray.train.v2.api.preemption import PreemptionInfo

from tests.unit.conftest import EventSink
from tests.unit.test_loop_components import _checkpointer, _run_epoch


def test_epochs_ending_under_a_notice_are_checkpointed_and_the_first_step_tagged():
    checkpointer, session, sink = _checkpointer("checkpoint.every_n_epochs=3")
    session.preempted_from_epoch = 1  # noticed while the second epoch trains
    saved, position = [], None
    for epoch in range(5):
        position = _run_epoch(checkpointer, epoch, position)
        state = checkpointer.save(position, {"epoch": epoch + 1}, None, last=epoch == 4)
        saved.append(state is not None and state.epoch)
    # from epoch 2 (index 1) on, whatever the cadence (3): the node may go at any time
    assert saved == [False, 1, 2, 3, 4]
    tagged = [e for e in sink.events if e[:2] == ("tag", Tag.PREEMPTED_AT_STEP)]
    assert tagged == [("tag", Tag.PREEMPTED_AT_STEP, "12")]  # 6 steps an epoch: epoch 2's


def test_without_a_notice_nothing_changes():
    checkpointer, _, sink = _checkpointer("checkpoint.every_n_epochs=3")
    position = None
    for epoch in range(2):
        position = _run_epoch(checkpointer, epoch, position)
        assert checkpointer.save(position, {"epoch": epoch + 1}, None, last=False) is None
    assert Tag.PREEMPTED_AT_STEP not in sink.tags()


def _preempting() -> PreemptingState:
    info = PreemptionInfo(deadline_ms=None, preempted_node_to_ranks={"n1": [2]})
    return PreemptingState(preemption_info=info, detected_at_s=0.0)


def test_the_controller_counts_each_preemption_once():
    sink = EventSink()
    count = CountPreemptions(sink)
    running, preempting = RunningState(), _preempting()
    for previous, current in [
        (SchedulingState(None), running),
        (running, preempting),
        (preempting, preempting),  # (each pass of the controller while it waits)
        (preempting, SchedulingState(None)),
        (SchedulingState(None), running),
        (running, preempting),
    ]:
        count.after_controller_state_update(previous, current)
    assert [e for e in sink.events if e[0] == "tag"] == [
        ("tag", Tag.PREEMPTIONS, "1"),
        ("tag", Tag.PREEMPTIONS, "2"),
    ]


def test_a_preemption_notice_is_no_wait_for_resources():
    wait = WaitForResources(0.0, WorkerNeeds(2, 1.0, 0.0, True))
    wait.after_controller_state_update(RunningState(), _preempting())
    wait.after_controller_state_update(_preempting(), _preempting())  # no failure raised
    assert wait.waiting_since is None
