"""Keys of deeprig's loop's reports that are markers, not metrics: read by whoever
receives the reports (the Train controller's logger, a search's driver, the progress
display) and never logged as metrics; and where a user's loop's report is recorded."""

from __future__ import annotations

from collections.abc import Mapping

# In an epoch's report when it is the job's last (the end, or an early stop): the logger
# waits for it to be recorded before training ends.
LAST_REPORT = "last_report"
# In a mid-epoch checkpoint's report (training/checkpointer.py): its metrics are placeholders
# that rank it below every epoch's checkpoint; neither logged nor shown.
STEP_CHECKPOINT = "step_checkpoint"
# When the epoch ended on the worker (unix seconds): the MLflow timestamp of its metrics,
# which the job's stage timing reads back (runners/stages.py). Every epoch report of
# deeprig's loop carries it (its `epoch` counts from 1); a user's loop's never does.
ENDED_AT = "ended_at"
# In rank 0's first epoch report of a tracked job: the params its worker learned (its FLOPs
# per sample and peak FLOP/s, strings), which the Train controller's logger records on the
# run, so that MLflow is never imported on a worker that only trains.
WORKER_PARAMS = "worker_params"
# In the one report of a search trial that finished under a dead driver, handed back to Tune
# by the restored search (runners/tune/trial.py): its run already holds every point.
HANDED_BACK = "handed_back"


def user_report_step(report: Mapping[str, float]) -> int | None:
    """Where a report of the user's own loop is recorded: its `step`, else its `epoch` as
    given (a loop counting epochs from 0 or from 1 is recorded as it counts); None when it
    carries neither."""
    for key in ("step", "epoch"):
        if key in report:
            return int(report[key])
    return None
