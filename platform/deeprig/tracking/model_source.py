"""Which logged model a predict job uses: a train run's id, runs:/ID/PATH,
models:/NAME/VERSION or models:/NAME@ALIAS (MLflow's registry, aliases included), found in
the store before Ray starts, with its lineage (run, experiment, registry name and version)
and what its pyfunc reads (the model_config it was logged with). An actor loads it with
`load_scorer`. Any problem is a SpecError on `model`, saying what exists."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from deeprig.spec.errors import Problem, SpecError
from deeprig.tracking.store import TrackingTarget
from deeprig.tracking.tags import Tag

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@dataclass(frozen=True)
class ModelRef:
    """A MODEL argument, parsed (nothing looked up yet)."""

    run_id: str | None = None
    artifact_path: str = "model"
    registry_name: str | None = None
    version: str | None = None
    alias: str | None = None


def parse_model_ref(text: str) -> ModelRef:
    """ValueError saying which forms are accepted when `text` is none of them."""
    if _RUN_ID.match(text):
        return ModelRef(run_id=text)
    if text.startswith("runs:/"):
        run_id, _, path = text.removeprefix("runs:/").partition("/")
        if _RUN_ID.match(run_id):
            return ModelRef(run_id=run_id, artifact_path=path.strip("/") or "model")
    if text.startswith("models:/"):
        rest = text.removeprefix("models:/")
        name, at, alias = rest.partition("@")
        if at and name and alias:
            return ModelRef(registry_name=name, alias=alias)
        name, slash, version = rest.rpartition("/")
        if slash and name and version.isdigit():
            return ModelRef(registry_name=name, version=version)
    raise ValueError(
        f"{text!r} is not a model: give a run id (32 hex digits), runs:/ID/model, "
        "models:/NAME/VERSION, models:/NAME@ALIAS or a train checkpoint folder"
    )


@dataclass(frozen=True)
class ResolvedModel:
    """A logged model found in the store: where to load it from and where it came from."""

    uri: str  # how the user named it, as MLflow names it (runs:/..., models:/...)
    # Where its files are (the logged model's artifact location): what the predict actors
    # load, with no tracking store to open (~0.9 s of SQLAlchemy on each, embedded store).
    location: str
    run_id: str  # the train run that logged it
    experiment: str  # that run's experiment's name
    config: dict[str, Any]  # its pyfunc's model_config (tracking/torch_pyfunc.py)
    label: str | None  # the label column it trained on (data.label), if the run says
    data: dict[str, Any] | None = None  # the train spec's `data`, from the run's params
    registry_name: str | None = None
    registry_version: str | None = None

    def lineage_tags(self) -> dict[str, str]:
        """The predict run's deeprig.model.* tags."""
        tags = {Tag.MODEL_RUN_ID: self.run_id, Tag.MODEL_URI: self.uri}
        if self.registry_name:
            tags[Tag.MODEL_NAME] = self.registry_name
            tags[Tag.MODEL_VERSION] = str(self.registry_version)
        return tags


def resolve_model(ref: ModelRef, target: TrackingTarget) -> ResolvedModel:
    """The model `ref` names in `target`'s store; SpecError naming what exists when it is
    not there, when its run logged no model, or when the run is an rl run's."""
    from mlflow import MlflowClient

    client = MlflowClient(target.uri)
    if ref.registry_name is not None:
        version = _registry_version(client, ref)
        uri = f"models:/{ref.registry_name}/{version.version}"
        return _from_run(client, target, version.run_id, uri, ref, str(version.version))
    assert ref.run_id is not None
    return _from_run(
        client, target, ref.run_id, f"runs:/{ref.run_id}/{ref.artifact_path}", ref, None
    )


def _refused(message: str) -> SpecError:
    return SpecError([Problem("model", message)])


def _registry_version(client: Any, ref: ModelRef) -> Any:
    from mlflow.exceptions import MlflowException

    name = ref.registry_name
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        known = [m.name for m in client.search_registered_models(max_results=20)]
        shown = ", ".join(known) if known else "none"
        raise _refused(f"no registered model {name!r} (registered: {shown})") from None
    found = client.search_model_versions(f"name='{name}'")
    versions = sorted((str(v.version) for v in found), key=int)
    try:
        if ref.alias is not None:
            return client.get_model_version_by_alias(name, ref.alias)
        return client.get_model_version(name, ref.version)
    except MlflowException:
        aliases = ", ".join(f"@{a} -> {v}" for a, v in sorted(model.aliases.items())) or "none"
        wanted = f"alias @{ref.alias}" if ref.alias else f"version {ref.version}"
        raise _refused(
            f"{name!r} has no {wanted} (versions: {', '.join(versions) or 'none'}; "
            f"aliases: {aliases})"
        ) from None


def _from_run(
    client: Any,
    target: TrackingTarget,
    run_id: str,
    uri: str,
    ref: ModelRef,
    registry_version: str | None,
) -> ResolvedModel:
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise _refused(f"no run {run_id} in the store {target.uri}") from None
    if run.data.tags.get(Tag.KIND) == "rl":
        raise _refused(
            f"run {run_id} is an rl run: its policy acts in an environment; score it with "
            f"`deeprig eval {run_id}`"
        )
    found = _pyfunc_model(target, uri)
    if found is None:
        raise _refused(
            f"run {run_id} has no logged model at {ref.artifact_path!r} (a train run logs "
            "`model` when it ends; a failed or killed run may have none)"
        )
    experiment = client.get_experiment(run.info.experiment_id).name
    config, location = found
    return ResolvedModel(
        uri,
        location,
        run_id,
        experiment,
        config,
        run.data.params.get("data.label"),
        trained_data(run.data.params),
        ref.registry_name,
        registry_version,
    )


def trained_data(params: dict[str, str]) -> dict[str, Any] | None:
    """The `data` section of the spec a run recorded as params (flattened, values as
    strings, lists and nulls as JSON): a train run's `data.*`, a search's `base.data.*`.
    None when the run recorded none."""
    import json

    for prefix in ("data.", "base.data."):
        flat = {k.removeprefix(prefix): v for k, v in params.items() if k.startswith(prefix)}
        if "source" not in flat:
            continue
        data: dict[str, Any] = {}
        for key, text in flat.items():
            *parents, leaf = key.split(".")
            node = data
            for parent in parents:
                node = node.setdefault(parent, {})
            try:
                node[leaf] = json.loads(text) if text[:1] in "[n" and text else text
            except json.JSONDecodeError:
                node[leaf] = text
        return data
    return None


def _pyfunc_model(target: TrackingTarget, uri: str) -> tuple[dict[str, Any], str] | None:
    """The model's pyfunc model_config and its artifact location; None when there is no
    model there."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import get_model_info
    from mlflow.pyfunc import FLAVOR_NAME, MODEL_CONFIG

    try:
        with _quiet_store(target.uri):
            info = get_model_info(uri)
            # (a model logged before MLflow 3 made logged models: loaded by its URI)
            logged = mlflow.get_logged_model(info.model_id) if info.model_id else None
    except (MlflowException, OSError):
        return None
    if FLAVOR_NAME not in info.flavors:
        return None
    location = logged.artifact_location if logged is not None else uri
    return dict(info.flavors[FLAVOR_NAME].get(MODEL_CONFIG) or {}), location


@contextmanager
def _quiet_store(tracking_uri: str) -> Iterator[None]:
    """MLflow's fluent API on the store, without its download progress bars (deeprig
    prints its own progress)."""
    from deeprig.tracking.runs import fluent_api_on

    saved = os.environ.get(_PROGRESS_BAR)
    os.environ[_PROGRESS_BAR] = "false"
    try:
        with fluent_api_on(tracking_uri):
            yield
    finally:
        if saved is None:
            os.environ.pop(_PROGRESS_BAR, None)
        else:
            os.environ[_PROGRESS_BAR] = saved


def load_scorer(uri: str, tracking_uri: str, config: dict[str, Any]) -> Any:
    """The logged model's scorer, loaded once per actor: `TorchPyfunc`, what its
    python_function flavour wraps, on its torch flavour and pyfunc `config`. The predict
    job has checked its input against the model's signature on the driver before Ray
    started; MLflow's pyfunc would check every batch again, and a table's columns are typed
    `Any` (so that whole numbers are read too: logged_model.py), which MLflow checks value
    by value: 47 of the 48 ms of a 4096-row batch of a 16-feature MLP."""
    import mlflow.pytorch

    from deeprig.tracking.torch_pyfunc import TorchPyfunc

    with _quiet_store(tracking_uri):
        return TorchPyfunc(mlflow.pytorch.load_model(uri), config)
