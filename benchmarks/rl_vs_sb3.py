"""RL: wall time to an episode return of 450 on CartPole-v1, deeprig's PPO
(jobs/rl_ppo_cartpole.yaml, RLlib) against stable-baselines3's PPO with the
rl-baselines3-zoo hyperparameters, side by side on this machine.

Both stop when the mean return of their last 20 finished training episodes reaches 450.
deeprig's time is its training loop (`algo.train()` until the stop rule, the algorithm
already built, as `model.learn` is SB3's: each side's construction is left out); the
row's note gives deeprig's whole `rl.run` beside it (checks, MLflow run, the algorithm's
build, wind-down), Ray already up.

    pip install -c requirements.lock -e ".[bench]"
    python benchmarks/rl_vs_sb3.py              # 3 seeds, ~2 minutes on 2 CPUs
    python benchmarks/rl_vs_sb3.py --quick      # smoke: 1 seed to a return of 150, < 1 minute

Target (issue 4): deeprig no slower.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import deque
from pathlib import Path

from harness import Row, Target, make_console, median, print_rows
from rich.console import Console
from rich.table import Table

FIGURE = "6 rl"
REPO = Path(__file__).resolve().parents[1]
TARGET = 450.0
WINDOW = 20  # episodes averaged, as deeprig's runner smooths episode_return_mean


def sb3_seconds_to_target(
    seed: int, max_steps: int = 300_000, target: float = TARGET
) -> tuple[float, int, float]:
    """Seconds of `model.learn`, env steps, and the mean return reached."""
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
            return not (self.reached() >= target)

        def reached(self) -> float:
            full = len(self.returns) == WINDOW
            return sum(self.returns) / WINDOW if full else float("nan")

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
    return time.perf_counter() - started, model.num_timesteps, callback.reached()


def deeprig_seconds_to_target(
    seed: int, home: Path, target: float = TARGET
) -> tuple[float, int, float]:
    """Seconds of training (NaN if the target was not reached), env steps, and seconds
    including the algorithm's build."""
    from deeprig.runners import Job, rl
    from deeprig.spec import load_spec

    job = REPO / "jobs/rl_ppo_cartpole.yaml"
    spec = load_spec(
        job, [f"seed={seed}", f"stop.episode_return_mean={target}", "tracking.experiment=bench-rl"]
    )
    started = time.perf_counter()
    outcome = rl.run(
        spec,
        Job(job.read_text(), job, console=Console(quiet=True), home=home),
    )
    total = time.perf_counter() - started
    steps = int(outcome.metrics.get("num_env_steps_sampled_lifetime", 0))
    reached = outcome.metrics.get("episode_return_mean", 0.0)
    if reached < target:
        return float("nan"), steps, float("nan")
    return outcome.train_seconds, steps, total


def measure(seeds=(0, 1, 2), target: float = TARGET, console: Console | None = None):
    from deeprig.cluster.session import ray_session

    console = console or Console()
    results = []
    with tempfile.TemporaryDirectory() as tmp, ray_session():
        for i, seed in enumerate(seeds):
            # Alternate which goes first, so drift in a shared machine lands on both.
            order = ("sb3", "deeprig") if i % 2 == 0 else ("deeprig", "sb3")
            got = {}
            for side in order:
                console.print(f"  seed {seed}: {side} PPO to a return of {target:g}")
                if side == "sb3":
                    got[side] = sb3_seconds_to_target(seed, target=target)
                else:
                    got[side] = deeprig_seconds_to_target(seed, Path(tmp), target)
            sb3_s, sb3_steps, sb3_reached = got["sb3"]
            if not sb3_reached >= target:
                sb3_s = float("nan")
            d_s, d_steps, d_total = got["deeprig"]
            results.append((seed, sb3_s, sb3_steps, d_s, d_steps, d_total))
    return results


def rl_rows(seeds=(0, 1, 2), target: float = TARGET, console: Console | None = None) -> list[Row]:
    results = measure(seeds, target, console)
    steps = ", ".join(f"seed {r[0]}: deeprig {r[4]} / SB3 {r[2]}" for r in results)
    missed = [
        f"{who} missed the target on seed {r[0]}"
        for r in results
        for who, s in (("deeprig", r[3]), ("SB3", r[1]))
        if s != s
    ]
    return [
        Row(
            FIGURE,
            f"PPO CartPole-v1 to a {WINDOW}-episode mean return of {target:g}, wall s",
            "deeprig s",
            median(r[3] for r in results),
            "SB3 s",
            median(r[1] for r in results),
            Target("<=", 1.0),
            len(results),
            f"deeprig = its training loop (Ray up, algorithm built; the whole run "
            f"{median(r[5] for r in results):.1f} s); env steps {steps}"
            + (f"; {'; '.join(missed)} (left out of its median)" if missed else ""),
        )
    ]


def rows(quick: bool = False, console: Console | None = None) -> list[Row]:
    """The figures `make bench` quotes (quick: a smoke run, under a minute)."""
    if quick:
        return rl_rows(seeds=(0,), target=150.0, console=console)
    return rl_rows(console=console)


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke run, under a minute")
    args = parser.parse_args()
    console = make_console()
    if args.quick:
        print_rows(rows(quick=True, console=console), "RL (smoke)", console)
        return 0
    rows_ = measure(tuple(range(args.seeds)), console=console)
    table = Table(title=f"wall time to a {WINDOW}-episode mean return of {TARGET:g}, CartPole-v1")
    for column in (
        "seed",
        "SB3 s",
        "SB3 env steps",
        "deeprig s",
        "deeprig env steps",
        "deeprig s, whole run",
        "deeprig / SB3",
    ):
        table.add_column(column, justify="right")
    for seed, sb3_s, sb3_steps, d_s, d_steps, d_total in rows_:
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
