"""`deeprig eval`: roll a trained rl policy out greedily, optionally recording a GIF."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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
        module, config = algo.get_module(), algo.config
        assert module is not None and config is not None  # (a restored algorithm has both)
        env_spec = config.env
        kwargs: dict[str, Any] = dict(config.env_config or {})
        if video:
            kwargs["render_mode"] = "rgb_array"
        env = (
            env_spec(config.env_config)
            if isinstance(env_spec, type)
            else gym.make(str(env_spec), **kwargs)
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
                    if config.normalize_actions:
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
