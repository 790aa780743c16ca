"""`optim:` and `early_stopping:` of a train spec: how deeprig's own loop optimises and
when it stops (a spec with its own `loop` sets neither)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from deeprig.spec.common import StrictModel


class ScheduleSpec(StrictModel):
    name: Literal["none", "step", "cosine"] = Field(
        default="none", description="Learning-rate schedule, stepped once per epoch."
    )
    warmup_epochs: int = Field(
        default=0, ge=0, description="Epochs of linear warm-up from lr/10 before the schedule."
    )
    step_size: int = Field(default=10, ge=1, description="`step`: epochs between decays.")
    gamma: float = Field(default=0.1, gt=0.0, le=1.0, description="`step`: decay factor.")
    min_lr: float = Field(default=0.0, ge=0.0, description="`cosine`: final learning rate.")


class OptimSpec(StrictModel):
    name: Literal["sgd", "adam", "adamw"] = Field(default="adamw", description="Optimizer.")
    lr: float = Field(default=1e-3, gt=0.0, le=10.0, description="Learning rate.")
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0, description="`sgd` momentum.")
    weight_decay: float = Field(default=0.0, ge=0.0, description="Weight decay.")
    batch_size: int = Field(default=64, ge=1, description="Batch size per worker.")
    num_epochs: int = Field(default=10, ge=1, description="Passes over the training data.")
    grad_clip_norm: float | None = Field(
        default=None, gt=0.0, description="Clip the gradient's global norm to this value."
    )
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec, description="LR schedule.")
    accumulate_steps: int = Field(
        default=1,
        ge=1,
        le=1024,
        description=(
            "Batches whose gradients add up before one optimiser step: the effective batch "
            "is accumulate_steps x batch_size x num_workers."
        ),
    )

    @model_validator(mode="after")
    def _warmup_fits(self) -> OptimSpec:
        if self.schedule.warmup_epochs >= self.num_epochs:
            raise ValueError(
                f"schedule.warmup_epochs ({self.schedule.warmup_epochs}) must be less than "
                f"num_epochs ({self.num_epochs})"
            )
        return self


class EarlyStoppingSpec(StrictModel):
    metric: str = Field(default="val_loss", description="Metric watched after every epoch.")
    mode: Literal["min", "max"] = Field(default="min", description="Lower or higher is better.")
    patience: int = Field(
        default=3, ge=1, description="Epochs without improvement before the job stops."
    )
    min_delta: float = Field(
        default=0.0, ge=0.0, description="How much better than the best counts as better."
    )
