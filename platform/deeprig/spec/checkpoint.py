"""`checkpoint:` of a train spec: how often, how many, ranked by what, and where."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from deeprig.spec.common import StrictModel


class CheckpointSpec(StrictModel):
    async_save: bool = Field(
        default=False,
        description=(
            "`strategy: fsdp`: write the shards in the background (DCP's async save), so a "
            "step does not wait for the disk."
        ),
    )
    num_to_keep: int = Field(default=2, ge=1, description="Checkpoints kept, best by `metric`.")
    metric: str = Field(default="val_loss", description="Metric that ranks checkpoints.")
    mode: Literal["min", "max"] = Field(default="min", description="Lower or higher is better.")
    every_n_epochs: int = Field(default=1, ge=1, description="Checkpoint frequency.")
    every_n_steps: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Also checkpoint every N optimiser steps inside an epoch (long epochs): a restart "
            "continues from that step with the batches it would have seen."
        ),
    )
    storage: str | None = Field(
        default=None,
        description=(
            "Where checkpoints go: a path every node sees (NFS) or a URI (s3://bucket/dir, "
            "gs://...). Omitted: $DEEPRIG_STORAGE, else the deeprig home folder (one node only)."
        ),
    )
