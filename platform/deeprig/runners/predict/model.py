"""The model a predict job uses, found before Ray starts: a logged or registered model
(tracking/model_source.py) or a train checkpoint folder, with what its pyfunc reads and
the data spec it trained on (which says how to read an input like its training data)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deeprig.spec.errors import Problem, SpecError
from deeprig.spec.predict import PredictSpec


@dataclass(frozen=True)
class PredictModel:
    """An MLflow model URI or a train checkpoint folder, what its pyfunc reads and
    answers (tracking/torch_pyfunc.py's config), the data it trained on, and its lineage."""

    uri: str | None  # mlflow.pyfunc.load_model's; None: `checkpoint`
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
    from deeprig.tracking.resolve import resolve_tracking

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
        found.uri,
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
    if raw is None:
        return None
    from pydantic import TypeAdapter, ValidationError

    from deeprig.spec.data import DataSpec

    try:
        return TypeAdapter(DataSpec).validate_python(raw)
    except ValidationError:
        return None


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
