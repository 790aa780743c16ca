"""`kind: rl`: an RLSpec -> RLlib AlgorithmConfig (new API stack) -> train loop -> MLflow.

The driver owns the loop: `algo.train()` once per iteration, one MLflow `log_batch` of the
iteration's metrics, a checkpoint every N iterations (kept N on disk, each logged as an
artifact), stop criteria checked after every iteration. `--resume` continues the newest
unfinished run of the job from its latest checkpoint, in the same MLflow run.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from deeprig.cluster.session import ray_session
from deeprig.runners.job_runs import find_unfinished_run, open_job_run
from deeprig.spec.errors import Problem, SpecError
from deeprig.spec.rl import RLSpec
from deeprig.tracking.runs import closed_on_failure
from deeprig.tracking.store import deeprig_home, resolve_tracking

# Result paths -> MLflow metric names (DESIGN.md: episode_return_mean,
# num_env_steps_sampled_lifetime). Learner losses are added by prefix below.
RESULT_METRICS = {
    ("env_runners", "episode_return_mean"): "episode_return_mean",
    ("env_runners", "episode_return_max"): "episode_return_max",
    ("env_runners", "episode_return_min"): "episode_return_min",
    ("env_runners", "episode_len_mean"): "episode_len_mean",
    ("num_env_steps_sampled_lifetime",): "num_env_steps_sampled_lifetime",
    ("env_runners", "num_env_steps_sampled_lifetime"): "num_env_steps_sampled_lifetime",
    ("time_this_iter_s",): "iteration_time_s",
    ("evaluation", "env_runners", "episode_return_mean"): "eval_episode_return_mean",
    # Fault tolerance: env runners replaced after a crash (RLlib restarts them).
    ("num_remote_worker_restarts",): "env_runner_restarts",
    ("num_healthy_workers",): "healthy_env_runners",
}
SMOOTHING_EPISODES = 20
LEARNER_METRICS = ("total_loss", "policy_loss", "vf_loss", "qf_loss", "entropy", "mean_kl_loss")


@dataclass(frozen=True)
class RLOutcome:
    run_id: str | None
    metrics: dict[str, float]
    iterations: int
    checkpoint_path: str | None
    seconds: float


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
    if problems:
        raise SpecError(problems)


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


def flatten_result(result: dict[str, Any]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for path, name in RESULT_METRICS.items():
        node: Any = result
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, int | float) and node == node:  # not NaN
            metrics[name] = float(node)
    for module, values in (result.get("learners") or {}).items():
        if not isinstance(values, dict):
            continue
        for key in LEARNER_METRICS:
            value = values.get(key)
            if isinstance(value, int | float):
                metrics[f"learner.{module}.{key}"] = float(value)
    steps = metrics.get("num_env_steps_sampled_lifetime")
    if steps is not None and result.get("time_this_iter_s"):
        sampled = (result.get("env_runners") or {}).get("num_env_steps_sampled")
        if isinstance(sampled, int | float):
            metrics["env_steps_per_s"] = float(sampled) / result["time_this_iter_s"]
    return metrics


def should_stop(spec: RLSpec, metrics: dict[str, float], iteration: int, seconds: float) -> bool:
    stop = spec.stop
    target = stop.episode_return_mean
    return bool(
        (target is not None and metrics.get("episode_return_mean", float("-inf")) >= target)
        or (
            stop.num_env_steps
            and metrics.get("num_env_steps_sampled_lifetime", 0) >= stop.num_env_steps
        )
        or (stop.iterations and iteration >= stop.iterations)
        or (stop.seconds and seconds >= stop.seconds)
    )


def run_rl(
    spec: RLSpec,
    *,
    spec_text: str,
    spec_path: Path,
    address: str | None = None,
    console: Console | None = None,
    home: Path | None = None,
    resume: bool = False,
) -> RLOutcome:
    console = console or Console()
    home = home or deeprig_home()
    check_rl_spec(spec)
    target = resolve_tracking(spec.tracking.uri, home) if spec.tracking.enabled else None
    resumed = find_unfinished_run(spec, target, "rl run") if resume else None
    with ray_session(address):
        if address:
            from deeprig.cluster.preflight import check_connected_cluster
            from deeprig.cluster.resources import connected_resources

            check_connected_cluster(spec, connected_resources(), target)
        recorder = open_job_run(spec, spec_text, spec_path, target, resumed, console)
        with closed_on_failure(recorder):
            outcome = _train(spec, recorder, home, console)
    return outcome


def _train(spec: RLSpec, recorder, home: Path, console: Console) -> RLOutcome:
    from mlflow.entities import Metric
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    started = time.perf_counter()
    run_id = recorder.run_id if recorder else None
    folder = home / "rl" / (f"{spec.name}-{run_id[:8]}" if run_id else spec.name)
    folder.mkdir(parents=True, exist_ok=True)
    algo = build_config(spec).build_algo()
    iteration = 0
    latest = _latest_checkpoint(folder)
    if latest is not None:
        algo.restore_from_path(str(latest))
        iteration = int(latest.name.split("_")[-1])
        if recorder:
            recorder.set_tags({"deeprig.resumed_from_iteration": str(iteration)})
        console.print(f"resumed from {latest} (iteration {iteration})")
    metrics: dict[str, float] = {}
    checkpoint: Path | None = latest
    progress = Progress(
        TextColumn("[bold]iteration {task.completed}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
    )
    task = progress.add_task("rl", total=spec.stop.iterations, status="sampling...")
    try:
        with progress:
            while True:
                result = algo.train()
                iteration += 1
                metrics = flatten_result(result)
                if recorder:
                    now = int(time.time() * 1000)
                    recorder.client.log_batch(
                        recorder.run_id,
                        metrics=[Metric(k, v, now, iteration) for k, v in metrics.items()],
                    )
                done = should_stop(spec, metrics, iteration, time.perf_counter() - started)
                if done or iteration % spec.checkpoint.every_n_iterations == 0:
                    checkpoint = _save(algo, folder, iteration, spec.checkpoint.num_to_keep)
                    if recorder:
                        recorder.log_directory(checkpoint, f"checkpoints/{checkpoint.name}")
                ret = metrics.get("episode_return_mean")
                steps = int(metrics.get("num_env_steps_sampled_lifetime", 0))
                status = (
                    f"return {ret:.1f}  env steps {steps}"
                    if ret is not None
                    else (f"env steps {steps}")
                )
                progress.update(task, completed=iteration, status=status)
                if done:
                    break
    finally:
        algo.stop()
    if recorder:
        recorder.set_tags(
            {"deeprig.checkpoint_path": str(checkpoint), "deeprig.iterations": str(iteration)}
        )
        recorder.finish("FINISHED")
    return RLOutcome(
        run_id,
        metrics,
        iteration,
        str(checkpoint) if checkpoint else None,
        time.perf_counter() - started,
    )


def _save(algo, folder: Path, iteration: int, keep: int) -> Path:
    path = folder / f"iteration_{iteration:06d}"
    algo.save_to_path(str(path))
    for old in sorted(folder.glob("iteration_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def _latest_checkpoint(folder: Path) -> Path | None:
    found = sorted(folder.glob("iteration_*"))
    return found[-1] if found else None


# ------------------------------------------------------------------ evaluation


def evaluate_checkpoint(
    checkpoint: str, episodes: int, seed: int = 0, video: Path | None = None
) -> list[float]:
    """Roll out the trained policy greedily for `episodes` episodes; their returns. With
    `video`, the first episode is rendered (rgb_array) into an animated GIF there."""
    import gymnasium as gym
    import torch
    from ray.rllib.algorithms.algorithm import Algorithm
    from ray.rllib.core.columns import Columns
    from ray.rllib.utils.spaces.space_utils import unsquash_action

    algo = Algorithm.from_checkpoint(checkpoint)
    try:
        module = algo.get_module()
        env_spec = algo.config.env
        render = {"render_mode": "rgb_array"} if video else {}
        env = (
            env_spec(algo.config.env_config)
            if isinstance(env_spec, type)
            else gym.make(env_spec, **(algo.config.env_config or {}), **render)
        )
        returns = []
        frames: list = []
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            total, done = 0.0, False
            while not done:
                if video and episode == 0 and len(frames) < MAX_VIDEO_FRAMES:
                    frames.append(env.render())
                batch = {Columns.OBS: torch.as_tensor(obs, dtype=torch.float32)[None]}
                with torch.no_grad():
                    out = module.forward_inference(batch)
                if Columns.ACTIONS in out:
                    action = out[Columns.ACTIONS][0]
                else:
                    dist_class = module.get_inference_action_dist_cls()
                    dist = dist_class.from_logits(out[Columns.ACTION_DIST_INPUTS])
                    action = dist.to_deterministic().sample()[0]
                action = action.numpy()
                if isinstance(env.action_space, gym.spaces.Box):
                    # The policy acts in [-1, 1] when RLlib normalises actions; the env runner
                    # maps that back onto the env's bounds, and so must we.
                    if algo.config.normalize_actions:
                        action = unsquash_action(action, env.action_space)
                    action = action.clip(env.action_space.low, env.action_space.high)
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
        if video:
            _write_gif(frames, video, env.metadata.get("render_fps") or 30)
        env.close()
        return returns
    finally:
        algo.stop()


MAX_VIDEO_FRAMES = 1000


def _write_gif(frames: list, path: Path, fps: int) -> None:
    """An animated GIF through Pillow (already installed with matplotlib): no video codec
    to install for a quick look at what the policy does."""
    from PIL import Image

    images = [Image.fromarray(frame) for frame in frames if frame is not None]
    if not images:
        raise ValueError("the environment rendered no rgb_array frames; it cannot be recorded")
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
