"""`kind: train`: a validated TrainSpec -> Ray Train TorchTrainer over Ray Data -> MLflow.

The flow (the skeleton is runners/contract.py's `run_job`): check everything that can be
checked before Ray starts (data, shapes, resources: `check` here) -> start or join Ray ->
create the MLflow run -> fit (the trainer: train_trainer.py) -> log the best model, its
checkpoint and the learning curve (train_fit.py) -> finish the run. Any failure on the way
marks the run FAILED.
"""

from __future__ import annotations

from deeprig.cluster.resources import (
    ClusterResources,
    ResourceProblems,
    WorkerBudget,
    budget_workers,
)
from deeprig.data import DataInfo, DataProblem, describe_data
from deeprig.models import InputShapeError, check_input_shape
from deeprig.runners.contract import Job, run_job
from deeprig.runners.fsdp_checks import (
    fsdp_problems,
    memory_estimate,
    memory_note,
    memory_problems,
)
from deeprig.runners.train_checked import TrainChecked
from deeprig.runners.train_fit import fit_and_record
from deeprig.runners.train_metrics import reported_metrics
from deeprig.runners.train_outcome import TrainOutcome
from deeprig.runners.train_trainer import train_run_name
from deeprig.runners.user_code import check_model_and_loop, collect_code
from deeprig.spec.errors import Problem, SpecError
from deeprig.spec.train import TrainSpec
from deeprig.tracking.store import checkpoint_storage

# A worker keeps its shard in memory when it is at most this big (data.cache: auto).
IN_MEMORY_SHARD_BYTES = 512 * 1024 * 1024


# What `--resume` continues after the driver died: the newest unfinished run of the job,
# from its latest checkpoint (Ray Train finds it again under the run's own name).
RESUMES = "train run"


def check(spec: TrainSpec, resources: ClusterResources) -> TrainChecked:
    """Every check that needs the data or the hardware, all problems at once (what the
    user's loop reports is checked with the spec)."""
    code, problems = collect_code(spec)
    data: DataInfo | None = None
    budget: WorkerBudget | None = None
    if not problems and spec.data is not None:
        try:
            data = describe_data(spec.data)
        except DataProblem as exc:
            problems.append(Problem(exc.path, str(exc)))
            problems += check_model_and_loop(spec, None)
    if data is not None or spec.data is None and not problems:
        problems += check_model_and_loop(spec, data)
    if data is not None:
        if spec.model is not None:
            try:
                check_input_shape(spec.model, data.input_shape, data.vocab_size, data.task)
            except InputShapeError as exc:
                problems.append(Problem(exc.field, str(exc)))
        allowed = reported_metrics(spec, data)
        for field in ("early_stopping", "checkpoint"):
            section = getattr(spec, field)
            if spec.loop is None and section is not None and section.metric not in allowed:
                problems.append(
                    Problem(
                        f"{field}.metric",
                        f"{section.metric!r} is not reported by a {data.task} job "
                        f"(one of: {', '.join(sorted(allowed))})",
                    )
                )
        train_rows_per_worker = data.num_train // spec.scaling.max_workers
        if train_rows_per_worker < 1:
            problems.append(
                Problem(
                    "scaling.num_workers",
                    f"{data.num_train} training rows cannot feed "
                    f"{spec.scaling.max_workers} workers",
                )
            )
    problems += fsdp_problems(spec, data)
    try:
        budget = budget_workers(spec.scaling, resources)
    except ResourceProblems as exc:
        problems.extend(exc.problems)
    if problems:
        raise SpecError(problems)
    assert budget is not None
    estimate = memory_estimate(spec, data)
    if memory_too_big := memory_problems(spec, estimate, resources, budget.cpus_per_worker):
        raise SpecError(memory_too_big)
    in_memory = data is not None and _keeps_shard_in_memory(spec, data)
    return TrainChecked(spec, data, budget, in_memory, code, memory_note(spec, estimate))


def _keeps_shard_in_memory(spec: TrainSpec, data: DataInfo) -> bool:
    assert spec.data is not None
    if spec.data.cache != "auto":
        return spec.data.cache == "memory"
    # (an elastic job's smallest size holds the biggest shards)
    shard_bytes = data.num_rows * data.bytes_per_row / spec.scaling.min_workers
    return shard_bytes <= IN_MEMORY_SHARD_BYTES


def run(spec: TrainSpec, job: Job) -> TrainOutcome:
    """Run a train job to the end. Raises SpecError (bad input, nothing recorded) or the
    training failure (after marking the MLflow run FAILED)."""
    return run_job(spec, job, check, fit_and_record, resumes=RESUMES, check_resumed=_check_resumed)


def _check_resumed(spec: TrainSpec, checked: TrainChecked, run_id: str, job: Job) -> None:
    """The checkpoint --resume continues from holds this spec's model (exit 2 if not)."""
    from deeprig.runners.resume_check import resumed_checkpoint_problems

    storage = checkpoint_storage(spec.checkpoint.storage, job.home)
    run_folder = f"{storage}/{train_run_name(spec, run_id)}"
    if problems := resumed_checkpoint_problems(spec, checked.data, run_folder):
        raise SpecError(problems)
