"""`kind: rl`'s RLlib config: an RLSpec -> RLlib AlgorithmConfig (new API stack), and the
spec's checks against RLlib and Gymnasium (an env that exists, settings the algorithm
takes, an action space it can act in). Shared by the rl runner and a search's rl trials,
which build the same algorithm from the same spec.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any

from deeprig.spec.errors import Problem, SpecError
from deeprig.spec.rl import RLSpec

SMOOTHING_EPISODES = 20


def _config_class(algorithm: str):
    from ray.rllib.algorithms.registry import ALGORITHMS

    _, default_config = ALGORITHMS[algorithm]()
    return type(default_config)


def accepted_training_keys(algorithm: str) -> set[str]:
    """What `<Algo>Config.training()` takes: its own parameters and the base class's."""
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

    keys: set[str] = set()
    for fn in (_config_class(algorithm).training, AlgorithmConfig.training):
        keys |= {p for p in inspect.signature(fn).parameters if p not in ("self", "kwargs")}
    return keys


def check_rl_spec(spec: RLSpec) -> None:
    """Unknown env, settings the algorithm does not take, an action space it cannot act in."""
    problems: list[Problem] = []
    env = None
    try:
        env = _make_env(spec)
    except SpecError as exc:
        problems.extend(exc.problems)
    allowed = accepted_training_keys(spec.algorithm)
    for key in spec.training:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(Problem(f"training.{key}", f"{spec.algorithm} does not take it{hint}"))
    if env is not None:
        import gymnasium as gym

        if spec.algorithm == "DQN" and not isinstance(env.action_space, gym.spaces.Discrete):
            problems.append(
                Problem(
                    "algorithm",
                    f"DQN needs a discrete action space; {spec.env} has {env.action_space}. "
                    "Use SAC or PPO for continuous actions",
                )
            )
        env.close()
    if spec.env_runners.vectorize == "vector_entry_point" and not _has_vector_entry_point(spec):
        problems.append(
            Problem(
                "env_runners.vectorize",
                f"{spec.env} has no vector entry point (a batched implementation); use "
                "`sync` or `async`",
            )
        )
    if problems:
        raise SpecError(problems)


def _has_vector_entry_point(spec: RLSpec) -> bool:
    import gymnasium as gym

    if ":" in spec.env or spec.env not in gym.registry:
        return False
    return gym.registry[spec.env].vector_entry_point is not None


def _make_env(spec: RLSpec):
    import gymnasium as gym

    if ":" in spec.env:
        module_name, _, class_name = spec.env.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            raise SpecError([Problem("env", f"cannot import {spec.env}: {exc}")]) from None
        return cls(spec.env_config) if spec.env_config else cls()
    try:
        return gym.make(spec.env, **spec.env_config)
    except gym.error.Error as exc:
        close = difflib.get_close_matches(spec.env, list(gym.registry), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        problem = Problem("env", f"unknown Gymnasium env {spec.env!r}{hint} ({exc})")
        raise SpecError([problem]) from None
    except TypeError as exc:
        problem = Problem("env_config", f"{spec.env} does not take these: {exc}")
        raise SpecError([problem]) from None


def build_config(spec: RLSpec):
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    config = (
        _config_class(spec.algorithm)()
        .environment(_env_for_rllib(spec), env_config=spec.env_config)
        .env_runners(
            num_env_runners=spec.env_runners.num_env_runners,
            num_envs_per_env_runner=spec.env_runners.num_envs_per_env_runner,
            gym_env_vectorize_mode=spec.env_runners.vectorize,
        )
        .learners(
            num_learners=spec.learners.num_learners,
            num_gpus_per_learner=1 if spec.learners.use_gpu else 0,
        )
        .training(**_rllib_values(spec.training))
        .rl_module(
            model_config=DefaultModelConfig(
                fcnet_hiddens=list(spec.model.hidden),
                fcnet_activation=spec.model.activation,
                vf_share_layers=spec.model.vf_share_layers,
            )
        )
        .debugging(seed=spec.seed)
        # RLlib's episode_return_mean otherwise averages only the episodes that ended in
        # the iteration: one lucky episode could meet the stop criterion.
        .reporting(metrics_num_episodes_for_smoothing=SMOOTHING_EPISODES)
        # A crashed env runner is replaced instead of failing the job.
        .fault_tolerance(restart_failed_env_runners=True)
    )
    if spec.evaluation.interval:
        config = config.evaluation(
            evaluation_interval=spec.evaluation.interval,
            evaluation_duration=spec.evaluation.episodes,
            evaluation_duration_unit="episodes",
        )
    return config


# RLlib reads a [low, high] range for these only as a tuple; YAML gives lists.
_TUPLE_SETTINGS = ("n_step",)


def _rllib_values(training: dict[str, Any]) -> dict[str, Any]:
    return {
        k: tuple(v) if k in _TUPLE_SETTINGS and isinstance(v, list) else v
        for k, v in training.items()
    }


def _env_for_rllib(spec: RLSpec):
    if ":" in spec.env:
        module_name, _, class_name = spec.env.partition(":")
        return getattr(importlib.import_module(module_name), class_name)
    return spec.env
