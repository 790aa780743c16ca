"""The model a predict job uses, found before Ray starts: a logged or registered model
(tracking/model_source.py) or a train checkpoint folder, with what its pyfunc reads and
the data spec it trained on (which says how to read an input like its training data)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel

from deeprig.spec.errors import Problem, SpecError
from deeprig.spec.predict import PredictSpec


@dataclass(frozen=True)
class PredictModel:
    """An MLflow model URI or a train checkpoint folder, what its pyfunc reads and
    answers (tracking/torch_pyfunc.py's config), the data it trained on, and its lineage."""

    # The logged model's own files, which each actor loads (tracking/model_source.py
    # load_scorer), so that no actor opens the tracking store; None: `checkpoint`.
    uri: str | None
    checkpoint: str | None
    config: dict[str, Any]
    label: str | None
    experiment: str
    lineage: dict[str, str]
    data: Any = None  # the train job's data spec (a DataSpec member); None: not known

    @property
    def classes(self) -> list[Any] | None:
        classes = self.config.get("classes")
        return list(classes) if classes is not None else None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.config.get("input_shape") or ())

    def reads(self) -> list[str]:
        """The input columns the model needs (a table's, or the text column)."""
        return list(self.config.get("columns") or [])


def find_model(spec: PredictSpec, tracking_uri: str | None = None) -> PredictModel:
    """The model `spec.model` names; SpecError on `model` when there is none."""
    from deeprig.cluster.tracking_target import resolve_tracking

    folder = Path(spec.model)
    if folder.is_dir():
        return _checkpoint_model(folder)
    from deeprig.tracking.model_source import parse_model_ref, resolve_model

    try:
        ref = parse_model_ref(spec.model)
    except ValueError as exc:
        raise SpecError([Problem("model", str(exc))]) from None
    found = resolve_model(ref, resolve_tracking(tracking_uri or spec.tracking.uri))
    return PredictModel(
        found.location,
        None,
        found.config,
        found.label,
        found.experiment,
        found.lineage_tags(),
        _data_spec(found.data),
    )


def _data_spec(raw: dict[str, Any] | None) -> Any:
    """The train run's data spec, validated as the spec loader would; None when the run
    recorded none that validates (a model from an older run)."""
    from pydantic import TypeAdapter, ValidationError

    from deeprig.spec.data import DATA_CONFIGS, DataSpec

    by_source = {get_args(c.model_fields["source"].annotation)[0]: c for c in DATA_CONFIGS}
    if raw is None or raw.get("source") not in by_source:
        return None
    try:
        return TypeAdapter(DataSpec).validate_python(_typed(by_source[raw["source"]], raw))
    except ValidationError:
        return None


def _typed(model: type[BaseModel], raw: dict[str, Any]) -> dict[str, Any]:
    """Params are strings: each value read as JSON (a number, `true`) unless its field
    takes text, nested models field by field; params that are no field of the spec (what
    the run learned, e.g. `data.classes`) left out."""
    typed: dict[str, Any] = {}
    for key, value in raw.items():
        field = model.model_fields.get(key)
        if field is None:
            continue
        kinds = get_args(field.annotation) or (field.annotation,)
        nested = [k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)]
        if isinstance(value, dict) and nested:
            typed[key] = _typed(nested[0], value)
        elif isinstance(value, str) and str not in kinds:
            try:
                typed[key] = json.loads(value.lower() if value in ("True", "False") else value)
            except json.JSONDecodeError:
                typed[key] = value
        else:
            typed[key] = value
    return typed


def _checkpoint_model(folder: Path) -> PredictModel:
    import dataclasses

    from deeprig.runners.train_record import model_interface, servable_model
    from deeprig.spec.train import TrainSpec
    from deeprig.tracking.tags import Tag
    from deeprig.training.state import TrainState

    if not (folder / "checkpoint.pt").exists():
        raise SpecError(
            [Problem("model", f"{folder} holds no checkpoint.pt: not a train checkpoint folder")]
        )
    state = TrainState.load(folder)
    trained = TrainSpec.model_validate(state.spec)
    lineage = {Tag.MODEL_URI: str(folder.resolve())}
    if state.run_id:
        lineage[Tag.MODEL_RUN_ID] = state.run_id
    # (a wrapper that featurises raw inputs of another shape says so: audio's waveforms,
    # as the logged model's interface records them)
    served, _, _ = servable_model(state)
    raw_shape = tuple(getattr(served, "raw_input_shape", state.input_shape))
    interface = dataclasses.replace(model_interface(state), input_shape=raw_shape)
    return PredictModel(
        None,
        str(folder.resolve()),
        interface.config(),
        getattr(trained.data, "label", None),
        trained.experiment_name,
        lineage,
        trained.data,
    )
