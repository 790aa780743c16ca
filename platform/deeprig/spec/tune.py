"""`kind: tune`: a hyperparameter search over a base train (or rl) spec."""

from __future__ import annotations

import copy
import math
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from deeprig.spec.common import NAME_PATTERN, StrictModel, TrackingSpec
from deeprig.spec.rl import RLSpec
from deeprig.spec.train import TrainSpec

BaseSpec = Annotated[TrainSpec | RLSpec, Field(discriminator="kind")]
# An rl base's `training` and `env_config` are open mappings (checked against the algorithm
# and the environment before the search starts): a search may set keys the base leaves out.
OPEN_RL_SECTIONS = ("training", "env_config")


class Domain(StrictModel):
    """Exactly one of the keys: how one spec field is sampled."""

    uniform: tuple[float, float] | None = Field(default=None, description="[low, high)")
    loguniform: tuple[float, float] | None = Field(
        default=None, description="[low, high), sampled uniformly in log space; low > 0"
    )
    quniform: tuple[float, float, float] | None = Field(
        default=None, description="[low, high, q]: uniform, rounded to a multiple of q"
    )
    randint: tuple[int, int] | None = Field(default=None, description="[low, high): an integer")
    choice: list[Any] | None = Field(default=None, description="one of these values")
    grid: list[Any] | None = Field(
        default=None, description="every one of these values (grid search)"
    )

    @model_validator(mode="after")
    def _exactly_one_and_sane(self) -> Domain:
        given = [k for k in type(self).model_fields if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of uniform, loguniform, quniform, randint, choice, grid "
                f"(got {', '.join(given) or 'none'})"
            )
        kind = given[0]
        value = getattr(self, kind)
        if kind in ("choice", "grid") and not value:
            raise ValueError(f"{kind} needs at least one value")
        if kind in ("uniform", "loguniform", "quniform", "randint") and value[0] >= value[1]:
            raise ValueError(f"{kind}: low must be < high (got {list(value)})")
        if kind == "loguniform" and value[0] <= 0:
            raise ValueError(f"loguniform: bounds must be > 0 (got {list(value)})")
        if kind == "quniform" and value[2] <= 0:
            raise ValueError(f"quniform: q must be > 0 (got {value[2]})")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in type(self).model_fields if getattr(self, k) is not None)

    @property
    def args(self) -> Any:
        return getattr(self, self.kind)

    def extremes(self) -> list[Any]:
        """Values a trial could get at the edges: each must make a valid base spec."""
        args = self.args
        if self.kind in ("choice", "grid"):
            return list(args)
        if self.kind == "randint":
            return [args[0], args[1] - 1]
        return [args[0], args[1]]


class SearchSpec(StrictModel):
    algorithm: Literal["random", "grid", "optuna"] = Field(
        default="random", description="random sampling, grid search, or Optuna's TPE"
    )
    metric: str = Field(default="val_loss", description="Metric the search optimises.")
    mode: Literal["min", "max"] = Field(default="min", description="Lower or higher is better.")
    num_samples: int = Field(
        default=8, ge=1, description="Trials (grid: repeats of the whole grid)."
    )
    max_concurrent_trials: int | None = Field(
        default=None, ge=1, description="Cap on trials at once; omitted: what resources allow."
    )
    seed: int | None = Field(default=None, description="Seed of the search algorithm.")


class SchedulerSpec(StrictModel):
    name: Literal["fifo", "asha", "median", "pbt"] = Field(
        default="fifo",
        description="fifo runs every trial to the end; asha/median stop bad "
        "trials early; pbt copies good trials' weights and perturbs their hyperparameters",
    )
    grace_period: int = Field(
        default=1, ge=1, description="asha/median: epochs before a trial may be stopped."
    )
    reduction_factor: float = Field(
        default=3.0, gt=1.0, description="asha: keep 1/reduction_factor at each rung."
    )
    perturbation_interval: int = Field(
        default=2, ge=1, description="pbt: epochs between exploit/explore steps."
    )


class TuneSpec(StrictModel):
    """`kind: tune`: a search over `base` (a train or rl spec, inline or a path to one)."""

    name: str = Field(pattern=NAME_PATTERN, description="Search name.")
    kind: Literal["tune"] = Field(description="Kind of work.")
    base: BaseSpec = Field(
        description="The train or rl spec each trial runs (inline, or a path relative to "
        "this file)."
    )
    search_space: dict[str, Domain] = Field(
        min_length=1,
        description="Dotted base-spec path -> domain, e.g. optim.lr: {loguniform: [1e-4, 1e-1]}.",
    )
    search: SearchSpec = Field(default_factory=SearchSpec, description="Search algorithm.")
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec, description="Scheduler.")
    tracking: TrackingSpec = Field(
        default_factory=TrackingSpec,
        description="Where the parent and trial runs go; register_as registers the best model.",
    )

    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or self.name

    @property
    def num_trials(self) -> int:
        """Trials in all: `num_samples`, times the size of the grid when there is one."""
        grid = math.prod(len(d.grid) for d in self.search_space.values() if d.grid is not None)
        return self.search.num_samples * grid

    @field_validator("search_space")
    @classmethod
    def _no_search_over_identity(cls, space: dict[str, Domain]) -> dict[str, Domain]:
        for path in space:
            if path.split(".")[0] in ("name", "kind", "tracking"):
                raise ValueError(f"{path}: cannot be searched over")
        return space

    @model_validator(mode="after")
    def _paths_exist_and_values_fit(self) -> TuneSpec:
        base = self.base.model_dump(mode="json")
        base_model = type(self.base)
        problems = []
        for path, domain in self.search_space.items():
            open_key = self.base.kind == "rl" and path.split(".")[0] in OPEN_RL_SECTIONS
            if not open_key and not _has_path(base, path):
                problems.append(f"search_space.{path}: not a field of the base spec")
                continue
            if domain.kind == "grid" and self.search.algorithm == "optuna":
                problems.append(f"search_space.{path}: optuna cannot search a grid; use choice")
            if self.search.algorithm == "grid" and domain.kind != "grid":
                problems.append(f"search_space.{path}: search.algorithm grid needs grid domains")
            for value in domain.extremes():
                try:
                    base_model.model_validate(apply_overrides(base, {path: value}))
                except ValidationError as exc:
                    why = exc.errors()[0]["msg"]
                    problems.append(f"search_space.{path}: value {value!r} is invalid: {why}")
                    break
        if self.scheduler.name == "pbt" and self.base.kind == "rl":
            problems.append(
                "scheduler.name: pbt over an rl base is not supported; use asha, median or fifo"
            )
        elif (
            self.scheduler.name == "pbt"
            and isinstance(self.base, TrainSpec)
            and self.base.checkpoint.every_n_epochs > self.scheduler.perturbation_interval
        ):
            problems.append(
                "scheduler.perturbation_interval: pbt needs a checkpoint at every perturbation "
                f"but the base checkpoints every {self.base.checkpoint.every_n_epochs} epochs; "
                "set base.checkpoint.every_n_epochs <= perturbation_interval"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _has_path(tree: dict[str, Any], dotted: str) -> bool:
    node: Any = tree
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def apply_overrides(tree: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of `tree` with each dotted path set to its value."""
    out = copy.deepcopy(tree)
    for dotted, value in values.items():
        node = out
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return out
