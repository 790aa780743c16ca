"""What every kind of spec shares: strict models, the job-name pattern, tracking.

Every model forbids unknown keys, and every field has a description: it feeds
`deeprig validate`, the README's spec reference and error messages.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


def _safe_experiment(name: str) -> str:
    """No path separators or control characters, not "." or "..": no name a spec gives can
    ever lead anywhere on disk."""
    if name in (".", "..") or any(c in "/\\" or ord(c) < 32 for c in name):
        raise ValueError("no / or \\, not . or ..: use letters, digits, spaces and _ . -")
    return name


class TrackingSpec(StrictModel):
    experiment: Annotated[str, AfterValidator(_safe_experiment)] | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="MLflow experiment (no / or \\); defaults to the job name.",
    )
    uri: str | None = Field(
        default=None,
        description=(
            "MLflow tracking URI (http://host:5000, sqlite:///...). Omitted: $MLFLOW_TRACKING_URI, "
            "else the server of a `deeprig cluster up` cluster on this machine while it runs, "
            "else the embedded store under the deeprig home folder."
        ),
    )
    register_as: str | None = Field(
        default=None, description="Register the final model under this name."
    )
    enabled: bool = Field(
        default=True, description="Set false to record nothing (benchmarks use this)."
    )


# `module:attr`, the way a spec names user code (a class, a function).
TARGET_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*$"


def _is_target(value: str) -> str:
    if not re.match(TARGET_PATTERN, value):
        raise ValueError(f"{value!r} is not module:attr (e.g. 'mynets:SmallResNet')")
    return value


Target = Annotated[str, AfterValidator(_is_target)]
