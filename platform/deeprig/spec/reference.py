"""The spec reference in Markdown, generated from the pydantic models (the README embeds it;
a test keeps the two in step).  python -m deeprig.spec.reference"""

from __future__ import annotations

import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from deeprig.spec.common import TrackingSpec
from deeprig.spec.data import (
    AugmentSpec,
    DigitsData,
    ImagesData,
    ParquetData,
    PythonData,
    SyntheticData,
    TextData,
    TimeseriesData,
    TokenizerSpec,
)
from deeprig.spec.rl import (
    EnvRunnersSpec,
    EvaluationSpec,
    LearnersSpec,
    RLCheckpointSpec,
    RLModelSpec,
    RLSpec,
    RLStopSpec,
)
from deeprig.spec.train import (
    CheckpointSpec,
    CNNConfig,
    CodeSpec,
    CustomModelConfig,
    EarlyStoppingSpec,
    FailureSpec,
    LoopSpec,
    MLPConfig,
    OptimSpec,
    RNNConfig,
    ScalingSpec,
    ScheduleSpec,
    TrainSpec,
    TrainTrackingSpec,
    TransformerConfig,
)
from deeprig.spec.tune import Domain, SchedulerSpec, SearchSpec, TuneSpec

SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("top level (`kind: train`)", TrainSpec),
    ("`model` with `name: mlp`", MLPConfig),
    ("`model` with `name: cnn`", CNNConfig),
    ("`model` with `name: lstm` or `gru`", RNNConfig),
    ("`model` with `name: transformer`", TransformerConfig),
    ("`model` with `name: custom`", CustomModelConfig),
    ("`data` with `source: builtin:digits`", DigitsData),
    ("`data` with `source: builtin:synthetic`", SyntheticData),
    ("`data` with `source: parquet`", ParquetData),
    ("`data` with `source: python`", PythonData),
    ("`data` with `source: images`", ImagesData),
    ("`data.augment` (images)", AugmentSpec),
    ("`data` with `source: text`", TextData),
    ("`data.tokenizer` (text)", TokenizerSpec),
    ("`data` with `source: timeseries`", TimeseriesData),
    ("`code`", CodeSpec),
    ("`loop`", LoopSpec),
    ("`optim`", OptimSpec),
    ("`optim.schedule`", ScheduleSpec),
    ("`scaling`", ScalingSpec),
    ("`checkpoint`", CheckpointSpec),
    ("`failure`", FailureSpec),
    ("`early_stopping`", EarlyStoppingSpec),
    ("`tracking`", TrainTrackingSpec),
    ("`tracking` (tune, rl)", TrackingSpec),
    ("top level (`kind: tune`)", TuneSpec),
    ("a `search_space` domain (one key)", Domain),
    ("`search`", SearchSpec),
    ("`scheduler`", SchedulerSpec),
    ("top level (`kind: rl`)", RLSpec),
    ("`env_runners`", EnvRunnersSpec),
    ("`model` (rl)", RLModelSpec),
    ("`stop` (rl)", RLStopSpec),
    ("`checkpoint` (rl)", RLCheckpointSpec),
    ("`evaluation`", EvaluationSpec),
    ("`learners`", LearnersSpec),
]


def _type_name(annotation: typing.Any) -> str:
    text = str(annotation).replace("typing.", "")
    for noise in ("Annotated[", "deeprig.spec.train.", "deeprig.spec.common."):
        text = text.replace(noise, "")
    if isinstance(annotation, type):
        return annotation.__name__
    return text.split(", FieldInfo")[0].split(", Field")[0]


def _default(field) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    if field.default_factory is not None:
        made = field.default_factory()
        # An empty list or mapping reads best as itself; a section's defaults are its own.
        return f"`{made}`" if made in ([], {}) else "see below"
    return f"`{field.default}`" if field.default is not None else "—"


def render() -> str:
    lines = []
    for title, model in SECTIONS:
        lines += [f"#### {title}", "", "| field | default | what it does |", "|---|---|---|"]
        for name, field in model.model_fields.items():
            lines.append(f"| `{name}` | {_default(field)} | {field.description or ''} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render())
