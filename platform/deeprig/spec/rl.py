"""`kind: rl`: an RLlib agent on a Gymnasium environment."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from deeprig.spec.common import NAME_PATTERN, StrictModel, TrackingSpec


class EnvRunnersSpec(StrictModel):
    num_env_runners: int = Field(
        default=0, ge=0, description="Sampling actors; 0 samples in the driver (best on 2 CPUs)."
    )
    num_envs_per_env_runner: int = Field(
        default=1, ge=1, description="Vectorised environments per runner."
    )
    vectorize: Literal["sync", "async", "vector_entry_point"] = Field(
        default="sync",
        description=(
            "How the envs are vectorised (Gymnasium's `make_vec`): `sync` steps them one "
            "by one in the runner, `async` in subprocesses, `vector_entry_point` uses the "
            "env's own batched implementation (CartPole's steps all envs in one numpy call)."
        ),
    )


class RLModelSpec(StrictModel):
    hidden: list[int] = Field(default=[64, 64], min_length=1, description="Hidden layer sizes.")
    activation: Literal["relu", "tanh", "silu"] = Field(default="tanh", description="Activation.")
    vf_share_layers: bool = Field(default=False, description="Share layers of policy and value.")


class RLStopSpec(StrictModel):
    episode_return_mean: float | None = Field(default=None, description="Stop at this return.")
    num_env_steps: int | None = Field(default=None, ge=1, description="Stop after env steps.")
    iterations: int | None = Field(default=None, ge=1, description="Stop after iterations.")
    seconds: float | None = Field(default=None, gt=0, description="Stop after wall seconds.")

    @model_validator(mode="after")
    def _something_stops_it(self) -> RLStopSpec:
        if self.num_env_steps is None and self.iterations is None and self.seconds is None:
            raise ValueError(
                "give num_env_steps, iterations or seconds (a return target alone may never "
                "be reached)"
            )
        return self


class RLCheckpointSpec(StrictModel):
    every_n_iterations: int = Field(default=10, ge=1, description="Checkpoint frequency.")
    num_to_keep: int = Field(default=2, ge=1, description="Checkpoints kept on disk.")


class EvaluationSpec(StrictModel):
    interval: int = Field(default=0, ge=0, description="Evaluate every N iterations; 0: never.")
    episodes: int = Field(default=10, ge=1, description="Episodes per evaluation.")


class LearnersSpec(StrictModel):
    num_learners: int = Field(default=0, ge=0, description="Remote learners; 0: in the driver.")
    use_gpu: bool = Field(default=False, description="One GPU per learner.")
    torch_threads: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Threads torch uses in the driver while it samples and learns there "
            "(num_env_runners/num_learners 0; Ray gives remote ones their CPUs). A small "
            "MLP steps faster on 1. Default: torch's own (the CPU count)."
        ),
    )


class RLSpec(StrictModel):
    """`kind: rl`: train an RLlib algorithm on a Gymnasium environment."""

    name: str = Field(pattern=NAME_PATTERN, description="Job name.")
    kind: Literal["rl"] = Field(description="Kind of work.")
    seed: int = Field(default=0, ge=0, description="Seed of the environments and the networks.")
    algorithm: Literal["PPO", "DQN", "SAC", "APPO", "IMPALA"] = Field(
        description="RLlib algorithm (new API stack)."
    )
    env: str = Field(
        min_length=1, description="Gymnasium id (CartPole-v1), or module:Class of your own env."
    )
    env_config: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of the environment."
    )
    env_runners: EnvRunnersSpec = Field(default_factory=EnvRunnersSpec, description="Sampling.")
    training: dict[str, Any] = Field(
        default_factory=dict,
        description="Settings of the algorithm's `.training()` (lr, gamma, "
        "train_batch_size_per_learner, minibatch_size, num_epochs, ...), checked against it.",
    )
    model: RLModelSpec = Field(default_factory=RLModelSpec, description="Network.")
    stop: RLStopSpec = Field(description="When to stop.")
    checkpoint: RLCheckpointSpec = Field(default_factory=RLCheckpointSpec, description="Saves.")
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec, description="Evaluation.")
    learners: LearnersSpec = Field(default_factory=LearnersSpec, description="Learners.")
    tracking: TrackingSpec = Field(default_factory=TrackingSpec, description="MLflow recording.")

    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or self.name
