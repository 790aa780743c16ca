"""RL: wall time to an episode return of 450 on CartPole-v1, deeprig's PPO
(jobs/rl_ppo_cartpole.yaml, RLlib) against stable-baselines3's PPO with the
rl-baselines3-zoo hyperparameters, side by side on this machine.

Both stop when the mean return of their last 20 finished training episodes reaches 450.
deeprig's time is its training loop (`deeprig run` minus Ray start-up); SB3's is
`model.learn` (a single process; no start-up to speak of).

    pip install -c requirements.lock -e ".[bench]"
    python benchmarks/rl_vs_sb3.py

Target (issue 4): deeprig no slower.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import deque
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
TARGET = 450.0
WINDOW = 20  # episodes averaged, as deeprig's runner smooths episode_return_mean


def sb3_seconds_to_target(seed: int, max_steps: int = 300_000) -> tuple[float, int]:
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    class StopAtTarget(BaseCallback):
        def __init__(self):
            super().__init__()
            self.returns: deque[float] = deque(maxlen=WINDOW)

        def _on_step(self) -> bool:
            for info in self.locals.get("infos", []):
                if "episode" in info:
                    self.returns.append(info["episode"]["r"])
            full = len(self.returns) == WINDOW
            return not (full and sum(self.returns) / WINDOW >= TARGET)

    def linear(start: float):
        return lambda progress: progress * start

    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    # rl-baselines3-zoo hyperparams/ppo.yml, CartPole-v1.
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=32,
        batch_size=256,
        gae_lambda=0.8,
        gamma=0.98,
        n_epochs=20,
        ent_coef=0.0,
        learning_rate=linear(0.001),
        clip_range=linear(0.2),
        seed=seed,
        verbose=0,
    )
    callback = StopAtTarget()
    started = time.perf_counter()
    model.learn(total_timesteps=max_steps, callback=callback)
    return time.perf_counter() - started, model.num_timesteps


def deeprig_seconds_to_target(seed: int, home: Path) -> tuple[float, int, float]:
    from deeprig.runners.rl import run_rl
    from deeprig.spec import load_spec

    job = REPO / "jobs/rl_ppo_cartpole.yaml"
    spec = load_spec(
        job, [f"seed={seed}", f"stop.episode_return_mean={TARGET}", "tracking.experiment=bench-rl"]
    )
    started = time.perf_counter()
    outcome = run_rl(
        spec, spec_text=job.read_text(), spec_path=job, console=Console(quiet=True), home=home
    )
    total = time.perf_counter() - started
    steps = int(outcome.metrics.get("num_env_steps_sampled_lifetime", 0))
    reached = outcome.metrics.get("episode_return_mean", 0.0)
    return outcome.seconds, steps, total if reached >= TARGET else float("nan")


def main() -> int:
    console = Console()
    seeds = [0, 1]
    rows = []
    from deeprig.cluster.session import ray_session

    with tempfile.TemporaryDirectory() as tmp, ray_session():
        for seed in seeds:
            console.print(f"seed {seed}: stable-baselines3 PPO, then deeprig PPO")
            sb3_s, sb3_steps = sb3_seconds_to_target(seed)
            d_s, d_steps, d_total = deeprig_seconds_to_target(seed, Path(tmp))
            rows.append((seed, sb3_s, sb3_steps, d_s, d_steps, d_total))
    table = Table(title=f"wall time to a {WINDOW}-episode mean return of {TARGET:g}, CartPole-v1")
    for column in (
        "seed",
        "SB3 s",
        "SB3 env steps",
        "deeprig s",
        "deeprig env steps",
        "deeprig s incl. build",
        "deeprig / SB3",
    ):
        table.add_column(column, justify="right")
    for seed, sb3_s, sb3_steps, d_s, d_steps, d_total in rows:
        table.add_row(
            str(seed),
            f"{sb3_s:.1f}",
            str(sb3_steps),
            f"{d_s:.1f}",
            str(d_steps),
            f"{d_total:.1f}",
            f"{d_s / sb3_s:.2f}x",
        )
    console.print(table)
    console.print(f"python {' '.join(sys.argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
