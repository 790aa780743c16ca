"""`loop:` of a train spec: your own Ray Train loop instead of deeprig's, and what a spec
with one may not set (deeprig's own loop is all that would read it)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from deeprig.spec.common import StrictModel, Target


class LoopSpec(StrictModel):
    function: Target = Field(
        description=(
            "module:attr of your own Ray Train loop, `fn(config)`, run on every worker instead "
            "of deeprig's (datasets `train` and `val` with columns x and y)."
        ),
    )
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="The loop's config dict (tunable as loop.config.NAME).",
    )
    metrics: list[str] = Field(
        min_length=1,
        description=(
            "What it reports with ray.train.report (checkpoint.metric is one of them). Each "
            "report is recorded at its `step`, else at its `epoch` as given (from 0 or 1)."
        ),
    )
    model_key: str = Field(
        default="model",
        description=(
            "With `model: {name: custom}`: the key of the model's state dict in the .pt file "
            "the best checkpoint holds (a file that is the state dict itself works too); "
            "those weights are logged as the run's MLflow model."
        ),
    )
    input_shape: list[Annotated[int, Field(ge=1)]] | None = Field(
        default=None,
        description=(
            "With `model:` and no `data:`: the shape of one input (no batch dimension), for "
            "the logged model's signature; omitted, `model.args.input_shape`."
        ),
    )


# What only deeprig's own loop reads, with the fix: a spec with `loop` may not set it, and a
# loop's recorded spec (its run's params) leaves it out.
LOOP_IGNORES = {
    "optim": "your own loop has its own optimiser: move it to loop.config",
    "early_stopping": "your own loop decides when it stops: remove it",
    "checkpoint.every_n_epochs": "your own loop decides when it checkpoints: remove it",
    "checkpoint.every_n_steps": "your own loop decides when it checkpoints: remove it",
    "scaling.mixed_precision": "your own loop decides its precision (autocast): remove it",
    "tracking.log_every_n_steps": "your own loop's reports are what is recorded: remove it",
    "scaling.keep_global_batch": (
        "your own loop sets its batch: read the world size from "
        "ray.train.get_context().get_world_size() and remove it"
    ),
}


def set_but_ignored(spec: StrictModel) -> list[tuple[str, str]]:
    """(field path, the fix) of each field of LOOP_IGNORES the spec's author wrote."""
    return [(path, fix) for path, fix in LOOP_IGNORES.items() if _is_set(spec, path)]


def _is_set(model: StrictModel, path: str) -> bool:
    """Whether the spec's author wrote the field at `path` (dotted), not its default."""
    *parents, name = path.split(".")
    for parent in parents:
        if parent not in model.model_fields_set:
            return False
        model = getattr(model, parent)
    return name in model.model_fields_set
