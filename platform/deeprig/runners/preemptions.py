"""A node of the job drained with notice (a cloud's spot reclaim, `ray drain-node`): counted
on the run (`deeprig.preemptions`).

Ray Train 2.60 watches its workers' nodes for drains: on a notice the controller enters its
`PreemptingState`, the workers keep training (checkpointing every epoch meanwhile:
training/checkpointer.py) until the node goes or its deadline passes, and
the run restarts from the latest checkpoint on the nodes left, under its own budget
(`FailureConfig.max_preemption_failures`, unlimited), not `max_failures`. This controller
callback sees the controller enter that state, once per notice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ray.train.v2._internal.execution.callback import ControllerCallback

from deeprig.tracking.tags import Tag

if TYPE_CHECKING:
    from deeprig.training.worker_config import MetricsSink


class CountPreemptions(ControllerCallback):
    """On the Ray Train controller: tag the run with how many preemption notices it had."""

    def __init__(self, sink: MetricsSink):
        self.sink = sink
        self.count = 0

    def after_controller_state_update(self, previous_state: Any, current_state: Any) -> None:
        preempting = type(current_state).__name__ == "PreemptingState"
        if preempting and type(previous_state).__name__ != "PreemptingState":
            self.count += 1
            self.sink.tag(Tag.PREEMPTIONS, str(self.count))
