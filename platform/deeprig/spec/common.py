"""What every kind of spec shares: strict models, the job-name pattern, tracking.

Every model forbids unknown keys, and every field has a description: it feeds
`deeprig validate`, the README's spec reference and error messages.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


class TrackingSpec(StrictModel):
    experiment: str | None = Field(
        default=None, description="MLflow experiment; defaults to the job name."
    )
    uri: str | None = Field(
        default=None,
        description=(
            "MLflow tracking URI (http://host:5000, sqlite:///...). Omitted: $MLFLOW_TRACKING_URI, "
            "else the embedded store under the deeprig home folder."
        ),
    )
    register_as: str | None = Field(
        default=None, description="Register the final model under this name."
    )
    enabled: bool = Field(
        default=True, description="Set false to record nothing (benchmarks use this)."
    )
