"""`kind: train`: `TrainSpec`, the pydantic model of a train job's spec, and the rules that
hold across its sections; each section is a module of its own (model.py, data.py, optim.py,
scaling.py, checkpoint.py, failure.py, loop.py). They are the truth about the spec; the
README's reference is generated from them (spec/reference.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from deeprig.spec.checkpoint import CheckpointSpec
from deeprig.spec.common import NAME_PATTERN, StrictModel, TrackingSpec
from deeprig.spec.data import DataSpec
from deeprig.spec.failure import FailureSpec
from deeprig.spec.loop import LOOP_IGNORES, LoopSpec, set_but_ignored
from deeprig.spec.model import CustomModelConfig, ModelSpec
from deeprig.spec.optim import EarlyStoppingSpec, OptimSpec
from deeprig.spec.scaling import ScalingSpec


class CodeSpec(StrictModel):
    paths: list[str] = Field(
        default_factory=list,
        description=(
            "Folders or .py files holding your modules, relative to the spec file's folder: "
            "put on the path here and shipped to every Ray worker."
        ),
    )


class TrainTrackingSpec(TrackingSpec):
    log_every_n_steps: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Also log `step/train_loss` and `step/lr` every N optimiser steps (at the global "
            "step), sent in batches. Omitted: per-epoch metrics only."
        ),
    )


class TrainSpec(StrictModel):
    """`kind: train`: data-parallel SGD of one model on one data set."""

    name: str = Field(pattern=NAME_PATTERN, description="Job name (letters, digits, _ . -).")
    kind: Literal["train"] = Field(description="Kind of work.")
    seed: int = Field(default=0, ge=0, description="Seed for the split, init and shuffling.")
    code: CodeSpec = Field(default_factory=CodeSpec, description="Your own modules.")
    model: ModelSpec | None = Field(
        default=None,
        description=(
            "Architecture, looked up by `name`. With `loop`: only `custom`, the network the "
            "loop trains, whose best weights are logged as the model."
        ),
    )
    data: DataSpec | None = Field(
        default=None,
        description=(
            "Where the rows come from, looked up by `source`. Optional with `loop`: a loop "
            "may load its own data."
        ),
    )
    optim: OptimSpec = Field(default_factory=OptimSpec, description="Optimisation.")
    scaling: ScalingSpec = Field(default_factory=ScalingSpec, description="Workers and devices.")
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec, description="Checkpoints.")
    failure: FailureSpec = Field(default_factory=FailureSpec, description="Fault tolerance.")
    early_stopping: EarlyStoppingSpec | None = Field(
        default=None, description="End the job when a metric stops improving."
    )
    tracking: TrainTrackingSpec = Field(
        default_factory=TrainTrackingSpec, description="MLflow recording."
    )
    loop: LoopSpec | None = Field(
        default=None, description="Your own Ray Train loop instead of deeprig's."
    )

    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or self.name

    @model_validator(mode="after")
    def _a_model_or_a_loop(self) -> TrainSpec:
        # (one error of `path: message` parts joined by "; ": the loader splits them)
        if self.loop is None:
            problems = []
            if self.model is None:
                problems.append(
                    "model: required (e.g. model: {name: mlp}), unless loop names your own loop"
                )
            if self.data is None:
                problems.append(
                    "data: required field is missing, add where the rows come from (e.g. "
                    "data: {source: 'builtin:digits'}), or name your own loop (loop:) that "
                    "loads its own"
                )
            if problems:
                raise ValueError("; ".join(problems))
            return self
        problems = [f"{path}: {why}" for path, why in self._loop_problems()]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _loop_problems(self) -> list[tuple[str, str]]:
        """(field path, the fix) of each thing a spec with `loop` sets that nothing would
        read, and a checkpoint metric the loop does not report."""
        assert self.loop is not None
        unused = []
        if self.checkpoint.metric not in self.loop.metrics:
            unused.append(
                (
                    "checkpoint.metric",
                    f"{self.checkpoint.metric!r} is not reported by the loop (loop.metrics) "
                    f"(one of: {', '.join(sorted(self.loop.metrics))})",
                )
            )
        unused += set_but_ignored(self)
        if self.model is not None and not isinstance(self.model, CustomModelConfig):
            unused.append(
                (
                    "model.name",
                    f"{self.model.name!r} is deeprig's own network, your loop builds its own: "
                    "remove model, or name your network (name: custom, target: module:attr) to "
                    "have its best weights logged",
                )
            )
        shape_given = (self.loop is not None and self.loop.input_shape is not None) or (
            isinstance(self.model, CustomModelConfig) and "input_shape" in self.model.args
        )
        if self.model is not None and self.data is None and not shape_given:
            unused.append(
                (
                    "loop.input_shape",
                    "required with model and no data, the shape of one input for the logged "
                    "model's signature (e.g. input_shape: [1, 8, 8])",
                )
            )
        return unused

    @model_serializer(mode="wrap")
    def _only_what_applies(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """The spec as recorded (params, checkpoints): a loop's run holds nothing of
        LOOP_IGNORES (the loop optimises and checkpoints by its own config), and no section
        the job does not have."""
        dumped = handler(self)
        for path in LOOP_IGNORES if self.loop is not None else ():
            *parents, name = path.split(".")
            section = dumped
            for parent in parents:
                section = section.get(parent) or {}
            section.pop(name, None)
        for key in ("model", "data", "early_stopping"):
            if dumped.get(key, 0) is None:
                dumped.pop(key)
        return dumped

    @property
    def effective_batch_size(self) -> int:
        """Rows behind one optimiser step, summed over the workers (an elastic job's at
        `max` workers: at every size when `keep_global_batch`)."""
        return self.optim.accumulate_steps * self.optim.batch_size * self.scaling.max_workers

    def batch_per_worker(self, world_size: int) -> int:
        """Each worker's batch at `world_size` workers: `optim.batch_size` at `max` (or
        fixed, or without `keep_global_batch`), else scaled so the global batch holds."""
        scaling = self.scaling
        if not scaling.elastic or not scaling.keep_global_batch:
            return self.optim.batch_size
        return self.optim.batch_size * scaling.max_workers // world_size

    def uneven_sizes(self) -> list[int]:
        """The world sizes of an elastic job at which `keep_global_batch` cannot split the
        global batch evenly over the workers."""
        scaling = self.scaling
        if not scaling.elastic or not scaling.keep_global_batch:
            return []
        rows = self.optim.batch_size * scaling.max_workers
        return [n for n in range(scaling.min_workers, scaling.max_workers + 1) if rows % n]

    @model_validator(mode="after")
    def _elastic_fits(self) -> TrainSpec:
        """What an elastic worker count cannot be combined with (one `path: message` part
        each, joined by "; ": the loader splits them)."""
        if not self.scaling.elastic or self.loop is not None:
            return self
        problems = []
        if uneven := self.uneven_sizes():
            rows = self.optim.batch_size * self.scaling.max_workers
            sizes = ", ".join(str(n) for n in uneven)
            problems.append(
                f"scaling.keep_global_batch: the global batch of {rows} rows per "
                f"accumulation step (batch_size x max) does not divide over {sizes} "
                "worker(s): choose optim.batch_size so that it does, narrow num_workers, or "
                "set keep_global_batch: false"
            )
        if self.checkpoint.every_n_steps is not None:
            problems.append(
                "checkpoint.every_n_steps: a mid-epoch position holds for one worker count "
                "only, and an elastic job resumes at epoch checkpoints: remove it, or fix "
                "num_workers"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self
