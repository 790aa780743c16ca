"""`scaling:` of a train spec: the workers (a fixed count or an elastic range), their
devices and placement, and how `strategy: fsdp` shards."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    ByteSize,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from deeprig.spec.common import StrictModel


class FSDPSpec(StrictModel):
    shard: Literal["auto"] | list[Annotated[str, Field(min_length=1)]] = Field(
        default="auto",
        description=(
            "The FSDP units, each sharded on its own: `auto` (a built-in model's blocks; a "
            "custom model's direct children over 100k parameters), or module class names."
        ),
    )
    reshard_after_forward: bool = Field(
        default=True,
        description="Free a unit's gathered parameters after its forward (less memory).",
    )
    activation_checkpointing: bool = Field(
        default=False, description="Recompute each unit's activations in the backward."
    )
    cpu_offload: bool = Field(
        default=False, description="Keep the sharded parameters in CPU memory (GPU jobs)."
    )


class WorkerRange(StrictModel):
    """An elastic job's worker count: Ray Train starts it once `min` workers fit, grows it
    toward `max` as resources join, and continues on the workers left after a loss."""

    min: int = Field(ge=1, description="Workers the job needs to start or continue.")
    max: int = Field(ge=1, description="Workers the job grows to when the cluster has room.")

    @model_validator(mode="after")
    def _min_not_above_max(self) -> WorkerRange:
        if self.min > self.max:
            raise ValueError(
                f"min ({self.min}) must be <= max ({self.max}): e.g. "
                f"num_workers: {{min: {self.max}, max: {self.min}}}"
            )
        return self


class ScalingSpec(StrictModel):
    num_workers: int | WorkerRange = Field(
        default=1,
        description=(
            "Data-parallel training workers: a number (fixed), or {min, max} (elastic: the "
            "job starts once `min` fit, grows toward `max`, continues on those left after a "
            "worker is lost, from the latest checkpoint)."
        ),
    )
    keep_global_batch: bool = Field(
        default=True,
        description=(
            "Elastic jobs: keep the global batch (accumulate_steps x batch_size x max) at "
            "every size by giving each of N workers batch_size x max / N rows; false: each "
            "worker keeps batch_size, the global batch shrinks with the job."
        ),
    )
    resize_interval_s: float = Field(
        default=60.0,
        gt=0.0,
        description=(
            "Elastic jobs: how often a running job looks for room to grow (each resize "
            "restarts the workers from the latest checkpoint)."
        ),
    )
    use_gpu: bool = Field(default=False, description="One GPU per worker.")
    cpus_per_worker: float | None = Field(
        default=None,
        gt=0.0,
        description=(
            "CPUs each worker reserves. Omitted: deeprig budgets it so Ray Data always keeps "
            "CPU next to the workers (a full CPU per worker would starve it and hang)."
        ),
    )
    mixed_precision: Literal["auto", "off", "bf16", "fp16"] = Field(
        default="auto", description="Autocast on GPU; `auto` is bf16 where supported, else off."
    )
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_SPREAD"] = Field(
        default="PACK",
        description=(
            "How workers are placed on a multi-node cluster: PACK fills a node first, SPREAD "
            "prefers different nodes, STRICT_SPREAD requires them."
        ),
    )
    strategy: Literal["ddp", "fsdp"] = Field(
        default="ddp",
        description=(
            "ddp: every worker holds the whole model. fsdp: parameters, gradients and "
            "optimizer state sharded over the workers (FSDP2), checkpoints sharded too."
        ),
    )
    fsdp: FSDPSpec = Field(default_factory=FSDPSpec, description="How `strategy: fsdp` shards.")
    memory_per_worker: ByteSize | None = Field(
        default=None,
        description=(
            "The memory one worker can have, like `8GiB`: a job whose estimate exceeds it is "
            "refused before it starts. Omitted: a node's memory divided by its workers."
        ),
    )

    @field_validator("num_workers", mode="wrap")
    @classmethod
    def _one_problem(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        # (pydantic reports an int-or-range union's every member failing: one line is clear)
        try:
            workers = handler(value)
        except ValidationError as exc:
            if isinstance(value, dict):
                error = exc.errors()[-1]
                ctx, got = error.get("ctx") or {}, error.get("input")
                if "ge" in ctx:
                    why = f"must be >= {ctx['ge']} (got {got!r})"
                else:
                    why = str(ctx.get("error", error["msg"][0].lower() + error["msg"][1:]))
                where = ".".join(str(p) for p in error["loc"][1:])
                raise ValueError(f"{where} {why}" if where else why) from None
            raise ValueError(
                f"a number of workers, or {{min: 1, max: 4}} for an elastic job (got {value!r})"
            ) from None
        if isinstance(workers, int) and workers < 1:
            raise ValueError(
                f"must be >= 1 (got {workers}), or {{min: 1, max: 4}} for an elastic job"
            )
        return workers

    @property
    def elastic(self) -> bool:
        return isinstance(self.num_workers, WorkerRange)

    @property
    def min_workers(self) -> int:
        n = self.num_workers
        return n.min if isinstance(n, WorkerRange) else n

    @property
    def max_workers(self) -> int:
        n = self.num_workers
        return n.max if isinstance(n, WorkerRange) else n

    def described(self) -> str:
        """The worker count in a few words: `2` or `1-4 (elastic)`."""
        if self.min_workers == self.max_workers and not self.elastic:
            return str(self.max_workers)
        return f"{self.min_workers}-{self.max_workers} (elastic)"
