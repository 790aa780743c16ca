"""`kind: predict`: a trained model scores new rows (a table, text, image or audio files, a
series), streamed through Ray Data's actors. `deeprig predict MODEL INPUT -o OUTPUT` makes
one of these from its arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from deeprig.spec.common import NAME_PATTERN, StrictModel, TrackingSpec

MODEL_HELP = (
    "A train run's id, runs:/ID/model, models:/NAME/VERSION, models:/NAME@ALIAS, or a train "
    "checkpoint folder (one holding checkpoint.pt)."
)


class PredictSpec(StrictModel):
    """`kind: predict`: batch inference with a logged or registered model."""

    name: str = Field(default="predict", pattern=NAME_PATTERN, description="Job name.")
    kind: Literal["predict"] = Field(description="Kind of work.")
    model: str = Field(min_length=1, description=MODEL_HELP)
    input: str = Field(
        min_length=1,
        description=(
            "The rows to score, in the layout the model trained on: a Parquet or CSV file, "
            "folder or URI holding the model's feature columns (or its text column, or a "
            "series' columns: one row per window); an image or audio folder (one row per "
            "file, named by its path). Labels are optional (a table's label column, or "
            "class sub-folders): with them, the run records the scores."
        ),
    )
    output: str = Field(
        min_length=1,
        description=(
            "Where the predictions go: .csv writes CSV, anything else Parquet; one file, "
            "written under a temporary name and renamed when complete."
        ),
    )
    batch_size: int = Field(default=1024, ge=1, description="Rows per model call.")
    workers: int = Field(default=1, ge=1, description="Actors, each loading the model once.")
    gpus_per_worker: float = Field(default=0.0, ge=0.0, description="GPUs of each actor.")
    proba: bool = Field(default=False, description="Add one proba_<class> column per class.")
    id_columns: list[str] = Field(
        default_factory=list, description="Input columns copied to the output beside each row."
    )
    overwrite: bool = Field(default=False, description="Replace an existing output file.")
    skip_bad_rows: bool = Field(
        default=False,
        description=(
            "Leave out a row found unreadable mid-stream (a corrupt image or clip), counted "
            "as `rows_skipped` and listed in the run's skipped_rows.csv; without it, such a "
            "row fails the job, naming its file."
        ),
    )
    log_output: bool = Field(
        default=False,
        description=(
            "Log the output file as an artifact of the run when under 100 MiB (its path "
            "and sha256 are tagged either way)."
        ),
    )
    tracking: TrackingSpec = Field(
        default_factory=TrackingSpec,
        description="MLflow recording; `experiment` defaults to the model's own experiment.",
    )

    @field_validator("input", "output")
    @classmethod
    def _absolute(cls, value: str) -> str:
        """A local path is relative to the directory deeprig runs in: made absolute once,
        since Ray Data's readers run in folders of their own. URIs stay as they are."""
        return value if "://" in value else str(Path(value).expanduser().resolve())

    @field_validator("model")
    @classmethod
    def _absolute_folder(cls, value: str) -> str:
        folder = Path(value).expanduser()
        return str(folder.resolve()) if folder.is_dir() else value

    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or self.name
