"""The names deeprig writes on MLflow runs, defined once: tag keys and run statuses.

deeprig's own tags are namespaced `deeprig.*`; where MLflow has a standard tag for the same
fact (the parent run, the git commit) deeprig writes MLflow's too, so MLflow's UI shows it.
"""

from __future__ import annotations

from enum import StrEnum

# MLflow's standard tags (mlflow.utils.mlflow_tags), spelled out so that this module stays
# importable on a training worker without importing mlflow; a unit test keeps them equal.
MLFLOW_PARENT_RUN_ID = "mlflow.parentRunId"
MLFLOW_GIT_COMMIT = "mlflow.source.git.commit"


class RunStatus(StrEnum):
    """MLflow's run statuses, as deeprig uses them. A run never stays RUNNING: it ends
    FINISHED (ran to the end), FAILED (an error), or KILLED (did not run to the end:
    Ctrl-C, `deeprig stop`, or a trial its search's scheduler stopped early, which
    `Tag.STOPPED_EARLY` tells apart)."""

    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"


class Tag:
    """Tag keys on a run (and, for `VERSION_PREFIX`, the prefix of a family of them)."""

    # lineage: what ran, from where (every run)
    JOB_NAME = "deeprig.job_name"
    KIND = "deeprig.kind"
    SPEC_HASH = "deeprig.spec_hash"
    VERSION_PREFIX = "deeprig.version."
    GIT_COMMIT = "deeprig.git_commit"
    GIT_DIRTY = "deeprig.git_dirty"
    RAY_JOB_ID = "deeprig.ray_job_id"
    RAY_SUBMISSION_ID = "deeprig.ray_submission_id"
    # a submitted job, as deeprig saw it end (tracking/job_history.py)
    JOB_STATUS = "deeprig.job.status"
    JOB_MESSAGE = "deeprig.job.message"
    JOB_ENTRYPOINT = "deeprig.job.entrypoint"
    JOB_ADDRESS = "deeprig.job.address"
    CODE_SHA256 = "deeprig.code_sha256"  # of the manifest of the user's files (code/)
    # results
    KEY_METRIC = "deeprig.key_metric"  # the metric that says how good the run is (key_metric.py)
    CHECKPOINT_PATH = "deeprig.checkpoint_path"
    BEST_EPOCH = "deeprig.best_epoch"
    UNPLACED_REPORTS = "deeprig.unplaced_reports"  # a user loop's reports not at their step
    ITERATIONS = "deeprig.iterations"
    MODEL_FORMAT = "deeprig.model_format"  # how the model was logged: pt2 or pickle
    # a predict run: the model it used (tracking/model_source.py) and the file it wrote
    MODEL_RUN_ID = "deeprig.model.run_id"
    MODEL_URI = "deeprig.model.uri"
    MODEL_NAME = "deeprig.model.name"  # registered name and version, when named so
    MODEL_VERSION = "deeprig.model.version"
    OUTPUT_PATH = "deeprig.output.path"
    OUTPUT_SHA256 = "deeprig.output.sha256"
    RESUMED_FROM_EPOCH = "deeprig.resumed_from_epoch"
    RESUMED_FROM_ITERATION = "deeprig.resumed_from_iteration"
    RESUMED_FROM_STEP = "deeprig.resumed_from_step"  # a resume inside an epoch: global step
    # an elastic job: the worker counts it ran at, in order ("2,1,2"), and its worker-group
    # restarts after a failure (tracking/report_logger.py's WorldSizes)
    WORLD_SIZES = "deeprig.world_sizes"
    RESTARTS = "deeprig.restarts"
    # a node of the job drained with notice (a spot reclaim, `ray drain-node`): how many
    # times (runners/preemptions.py), and the global step of the checkpoint its notice
    # made (training/checkpointer.py)
    PREEMPTIONS = "deeprig.preemptions"
    PREEMPTED_AT_STEP = "deeprig.preempted_at_step"
    # the process driving the run, so `deeprig runs --close-stale` can tell it is gone
    DRIVER_HOST = "deeprig.driver.host"
    DRIVER_PID = "deeprig.driver.pid"
    DRIVER_STARTED = "deeprig.driver.started"  # its start time: a reused pid is not it
    # the id a job used for its run before its tracking server answered and made it
    # (tracking/new_runs.py)
    PROVISIONAL_RUN_ID = "deeprig.provisional_run_id"
    # a search's trials (child runs) and their parent
    PARENT_RUN_ID = "deeprig.parent_run_id"
    TRIAL_ID = "deeprig.trial_id"
    TRIAL_VALUES = "deeprig.trial_values"
    STOPPED_EARLY = "deeprig.stopped_early"
    STOPPED_AT_EPOCH = "deeprig.stopped_at_epoch"  # a train job's early stop
    # why a run FAILED: a deeprig.failures.FailureClass, or driver_lost (runs --close-stale),
    # failed_before_training (a submitted job that made no run)
    FAILURE = "deeprig.failure"
    EPOCHS_TRAINED = "deeprig.epochs_trained"
    BEST_TRIAL = "deeprig.best_trial"
    BEST_TRIAL_ID = "deeprig.best_trial_id"
    BEST_RUN_ID = "deeprig.best_run_id"
    ORPHANED_BY_RESUME = "deeprig.orphaned_by_resume"
    ORPHAN_RUNS_DELETED = "deeprig.orphan_runs_deleted"
