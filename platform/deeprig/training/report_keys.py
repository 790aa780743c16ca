"""Keys of deeprig's loop's reports that are markers, not metrics: read by whoever
receives the reports (the Train controller's logger, a search's driver, the progress
display) and never logged as metrics."""

# In an epoch's report when it is the job's last (the end, or an early stop): the logger
# waits for it to be recorded before training ends.
LAST_REPORT = "last_report"
# In a mid-epoch checkpoint's report (training/step_hooks.py): its metrics are placeholders
# that rank it below every epoch's checkpoint; neither logged nor shown.
STEP_CHECKPOINT = "step_checkpoint"
# When the epoch ended on the worker (unix seconds): the MLflow timestamp of its metrics,
# which the job's stage timing reads back (runners/stages.py).
ENDED_AT = "ended_at"
