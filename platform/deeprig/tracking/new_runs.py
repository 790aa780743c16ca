"""The runs this process created, and a run whose creation waits for its tracking server.

A job whose server does not answer when its run is made trains all the same: its run gets
a provisional id (a fresh uuid, the form MLflow's own ids take), and its first record
(`create_record`) asks for the run — its experiment made if missing — once the server
answers. Every record of the run carries the experiment it waits in, so whichever process
delivers it (the driver, the Train controller, a worker, `deeprig runs --sync`) finds the
run the server made by its `deeprig.provisional_run_id` tag (`stored_run_id`), and a
record that comes before the run exists waits (`NotCreatedYet`, retried like a server
that is away). Looking the tag up before creating makes a creation delivered twice (its
answer lost) one run.

This process also remembers the runs its job created (`created_here`): a metric sink of a
new run knows it holds nothing the job did not send, so a first report needs no read of
the run, which would fail while the server is away. A run found again for `--resume` that
was made this way is known by its provisional id again (`known_as`): the job's Ray Train
run, its checkpoints, were named after it."""

from __future__ import annotations

import uuid
from typing import Any

from deeprig.tracking.tags import Tag

# Provisional run ids this process knows -> the experiment the run is made in (its records
# name it, before and after the server made it). A sink made here carries it to the
# controller and the workers.
_PROVISIONAL: dict[str, str] = {}
_CREATED_HERE: set[str] = set()  # run ids (either kind) of runs this process's jobs made
_STORED: dict[str, str] = {}  # provisional id -> the id the server gave the run


def remember(run_id: str, waits_in: str | None, created_here: bool) -> None:
    """A run this process records to: `waits_in`, the experiment of a provisional id's."""
    if waits_in is not None:
        _PROVISIONAL[run_id] = waits_in
    if created_here:
        _CREATED_HERE.add(run_id)


def known_as(provisional: str, stored: str, experiment: str) -> None:
    """A run made once its server answered, found again: recorded to under its first id."""
    _STORED[provisional] = stored
    remember(provisional, experiment, created_here=False)


def waits_in(run_id: str) -> str | None:
    """The experiment a provisional run id's run is made in; None for an id the server gave."""
    return _PROVISIONAL.get(run_id)


def created_here(run_id: str) -> bool:
    return run_id in _CREATED_HERE


class NotCreatedYet(Exception):
    """A record of a run whose creation has not reached its server yet: tried again later."""


def provisional_run_id() -> str:
    return uuid.uuid4().hex


def create_record(
    run_id: str,
    experiment: str,
    artifact_location: str | None,
    run_name: str,
    tags: dict[str, str],
    start_ms: int,
) -> dict[str, Any]:
    """The creation of run `run_id` (provisional) in `experiment`, started at `start_ms`."""
    return {
        "op": "create",
        "run": run_id,
        "experiment": experiment,
        "location": artifact_location,
        "name": run_name,
        "tags": tags,
        "at": start_ms,
    }


def stored_run_id(client: Any, run_id: str, experiment: str | None) -> str:
    """The id the server knows the run by: `run_id` itself, or (`experiment` given: its
    creation waited) the run tagged with it as its provisional id. NotCreatedYet while
    there is none."""
    if experiment is None:
        return run_id
    if run_id not in _STORED:
        found = _find(client, run_id, experiment)
        if found is None:
            raise NotCreatedYet(f"run {run_id} is not created in {experiment!r} yet")
        _STORED[run_id] = found
    return _STORED[run_id]


def create(client: Any, record: dict[str, Any]) -> str:
    """Deliver a `create_record`: the run (and its experiment) made unless it exists."""
    run_id, experiment = record["run"], record["experiment"]
    if run_id not in _STORED:
        found = _find(client, run_id, experiment)
        if found is None:
            experiment_id = ensure_experiment(client, experiment, record["location"])
            tags = record["tags"] | {Tag.PROVISIONAL_RUN_ID: run_id}
            run = client.create_run(
                experiment_id, start_time=record["at"], tags=tags, run_name=record["name"]
            )
            found = run.info.run_id
        _STORED[run_id] = found
    return _STORED[run_id]


def _find(client: Any, run_id: str, experiment: str) -> str | None:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.`{Tag.PROVISIONAL_RUN_ID}` = '{run_id}'",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def ensure_experiment(client: Any, name: str, artifact_location: str | None) -> str:
    """The experiment's id: made (artifacts under `artifact_location`, None: the store's
    default) when missing, restored when deleted."""
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        if existing.lifecycle_stage == "deleted":
            client.restore_experiment(existing.experiment_id)
        return existing.experiment_id
    try:
        # MLflow 3's UI opens an experiment on its GenAI (traces) view unless told it holds
        # model training runs.
        return client.create_experiment(
            name,
            artifact_location=artifact_location,
            tags={"mlflow.experimentKind": "custom_model_development"},
        )
    except Exception:  # another job created it between our look-up and create
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id
