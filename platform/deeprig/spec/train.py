"""`kind: train`: the pydantic models of a train job's spec (model, data, optimisation,
execution). They are the truth about the spec; the README's reference is generated from
them (spec/reference.py).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import (
    ByteSize,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from deeprig.failures import RETRIED_BY_DEFAULT, FailureClass
from deeprig.spec.common import NAME_PATTERN, StrictModel, Target, TrackingSpec
from deeprig.spec.data import DataSpec

# ---------------------------------------------------------------- models
# One config class per architecture. deeprig.models.registry maps each class to its
# builder and the sample shapes it reads (a unit test keeps the two in step).


class MLPConfig(StrictModel):
    name: Literal["mlp"] = Field(description="Dense network over the flattened input.")
    hidden: list[Annotated[int, Field(ge=1)]] = Field(
        default=[128, 64], min_length=1, description="Width of each hidden layer."
    )
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout after each layer.")
    activation: Literal["relu", "gelu", "tanh"] = Field(default="relu", description="Activation.")


class CNNConfig(StrictModel):
    name: Literal["cnn"] = Field(description="2-D convolutions over image-shaped input.")
    channels: list[Annotated[int, Field(ge=1)]] = Field(
        default=[16, 32], min_length=1, description="Output channels of each conv block."
    )
    kernel_size: int = Field(default=3, ge=1, le=11, description="Square kernel size.")
    hidden: int = Field(default=64, ge=1, description="Width of the dense layer after the convs.")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout before the head.")
    batch_norm: bool = Field(default=True, description="BatchNorm after each convolution.")


class RNNConfig(StrictModel):
    name: Literal["lstm", "gru"] = Field(description="Recurrent network over a sequence.")
    hidden_size: int = Field(default=64, ge=1, description="Hidden units per layer.")
    num_layers: int = Field(default=1, ge=1, le=8, description="Stacked recurrent layers.")
    bidirectional: bool = Field(default=False, description="Read the sequence both ways.")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout between layers.")
    embedding_dim: int = Field(
        default=64,
        ge=1,
        description="Text data: width of the token embedding the recurrent layers read.",
    )
    pooling: Literal["last", "mean"] = Field(
        default="last",
        description=(
            "What feeds the head: the hidden state at the last real time step, or the mean "
            "over the real time steps (text padding is masked either way)."
        ),
    )


class TransformerConfig(StrictModel):
    name: Literal["transformer"] = Field(
        description="Pre-norm transformer over token ids (text) or time steps (series)."
    )
    d_model: int = Field(default=128, ge=1, description="Width of every position's vector.")
    n_heads: int = Field(default=4, ge=1, description="Attention heads (they split d_model).")
    n_layers: int = Field(default=2, ge=1, le=128, description="Transformer blocks.")
    ff_mult: int = Field(
        default=4, ge=1, le=16, description="Feed-forward width as a multiple of d_model."
    )
    dropout: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="Dropout on attention and residual branches."
    )
    pooling: Literal["cls", "mean"] = Field(
        default="cls",
        description=(
            "What feeds the head of a model that is not causal: a learned [CLS] vector read "
            "before the sequence, or the mean over the real steps (text padding is masked)."
        ),
    )
    causal: bool = Field(
        default=False,
        description=(
            "Each position attends only to those before it and the head predicts at every "
            "position: the next-token model `data.task: language_model` trains."
        ),
    )
    max_length: int | None = Field(
        default=None,
        ge=1,
        description="Positions the model holds. Omitted: the data's sequence length.",
    )
    positions: Literal["learned", "sinusoidal"] = Field(
        default="learned", description="Learned position embeddings, or fixed sinusoids."
    )

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TransformerConfig:
        if self.d_model % self.n_heads:
            raise ValueError(
                f"n_heads ({self.n_heads}) must divide d_model ({self.d_model}): e.g. "
                f"d_model: {self.n_heads * max(1, round(self.d_model / self.n_heads))}"
            )
        return self


class CustomModelConfig(StrictModel):
    name: Literal["custom"] = Field(description="Your own network, found on `code.paths`.")
    target: Target = Field(
        description="module:attr of a torch.nn.Module subclass, or of a function returning one.",
    )
    args: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Keyword arguments (tunable as model.args.NAME); `num_outputs` and `input_shape` "
            "are filled from the data when it takes parameters of those names."
        ),
    )


ModelSpec = Annotated[
    MLPConfig | CNNConfig | RNNConfig | TransformerConfig | CustomModelConfig,
    Field(discriminator="name"),
]
MODEL_CONFIGS: tuple[type[StrictModel], ...] = get_args(get_args(ModelSpec)[0])


class CodeSpec(StrictModel):
    paths: list[str] = Field(
        default_factory=list,
        description=(
            "Folders or .py files holding your modules, relative to the spec file's folder: "
            "put on the path here and shipped to every Ray worker."
        ),
    )


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


# ---------------------------------------------------------------- optimisation


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


# ---------------------------------------------------------------- execution


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


class EarlyStoppingSpec(StrictModel):
    metric: str = Field(default="val_loss", description="Metric watched after every epoch.")
    mode: Literal["min", "max"] = Field(default="min", description="Lower or higher is better.")
    patience: int = Field(
        default=3, ge=1, description="Epochs without improvement before the job stops."
    )
    min_delta: float = Field(
        default=0.0, ge=0.0, description="How much better than the best counts as better."
    )


class FailureSpec(StrictModel):
    max_failures: int = Field(
        default=0,
        ge=-1,
        description=(
            "Worker-group restarts from the latest checkpoint (-1: unlimited), spent only on "
            "failures of a class in `retry_on`."
        ),
    )
    retry_on: list[FailureClass] | None = Field(
        default=None,
        description=(
            "The failure classes a restart is spent on (the run's `deeprig.failure` tag). "
            f"Omitted: {', '.join(RETRIED_BY_DEFAULT)}, what a restart can cure; any other "
            "failure (e.g. user_code, non_finite_loss) ends the job at once."
        ),
    )
    wait_for_resources_s: float = Field(
        default=300.0,
        ge=0.0,
        description=(
            "How long the workers may wait for room (a node lost, none joined; an elastic "
            "job below `min`) before the job fails as worker_lost, naming the lost nodes and "
            "what it lacks. A fixed-size job learns it at each worker-group start attempt "
            "(every 60 s, Ray Train's start timeout)."
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
        unused += [(path, fix) for path, fix in LOOP_IGNORES.items() if _is_set(self, path)]
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


def _is_set(model: StrictModel, path: str) -> bool:
    """Whether the spec's author wrote the field at `path` (dotted), not its default."""
    *parents, name = path.split(".")
    for parent in parents:
        if parent not in model.model_fields_set:
            return False
        model = getattr(model, parent)
    return name in model.model_fields_set
