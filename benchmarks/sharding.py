"""Sharding (issue 27's targets): FSDP against DDP at 2 workers on a transformer of 56.8M
parameters, deeprig against plain PyTorch, side by side in one run on this machine.

- Memory: the bytes of parameters, gradients and AdamW state each rank holds after one
  step (a shard counts its local part, `DTensor.to_local()`), FSDP over DDP, counted in the
  plain processes, whose FSDP units are deeprig's `shard: auto` ones (each transformer
  block, then the root); deeprig's own `memory.params_held` and `memory.peak_bytes` (the
  worker's resident high-water mark) per rank, both ways.
- Speed: deeprig's FSDP step (the global batch over its own `samples_per_s`, median of the
  steady epochs) against a plain-PyTorch FSDP2 script's mean step after its warm-up steps
  (benchmarks/floors/plain_sharding.py: torch.multiprocessing over gloo, no Ray), and
  deeprig's DDP samples/s against the plain DDP script's; same model, per-rank batch,
  world size and one torch thread per rank on both sides. Each of the four runs twice,
  interleaved, each side first in turn, all while one local Ray is up (medians quoted).
- Parity (benchmarks/sharding_parity.py, deeprig's steps and checkpoint in 2 gloo
  processes): DDP and FSDP from the same seed and global batch after 50 steps, and a
  checkpoint of 2 FSDP ranks resumed on 1 against the run that never stopped; and the last
  epoch's loss of the two deeprig jobs above.

    python benchmarks/sharding.py           # ~5 minutes on 2 CPUs
    python benchmarks/sharding.py --quick   # smoke: a small transformer, ~2 minutes
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from floors.plain_sharding import ModelSize, PlainRun
from harness import DeeprigRun, Row, Target, make_console, median, print_rows, run_deeprig_train
from rich.console import Console

FIGURE = "27 sharding"
WORKERS = 2
STRATEGIES = ("ddp", "fsdp")
MIB = 2**20


@dataclass(frozen=True)
class Setting:
    size: ModelSize
    batch: int  # rows per worker and step
    steps_per_epoch: int
    epochs: int  # deeprig's; the first `warmup` are left out
    warmup: int
    plain_steps: int  # the plain scripts'; the first `plain_warmup` are left out
    plain_warmup: int
    repeats: int  # of each of the four runs, interleaved

    @property
    def train_rows(self) -> int:
        return self.batch * WORKERS * self.steps_per_epoch


FULL = Setting(ModelSize(), 8, 6, 3, 1, 10, 2, 2)
QUICK = Setting(ModelSize(d_model=256, n_heads=4, n_layers=2), 8, 4, 2, 1, 6, 2, 1)


def job_spec(setting: Setting, strategy: str):
    from deeprig.spec import load_spec_text

    size = setting.size
    # val_fraction 0.2 of num_samples: the training split is exactly train_rows
    num_samples = setting.train_rows * 5 // 4
    text = f"""
name: bench-sharding-{strategy}
kind: train
seed: 0
model: {{name: transformer, d_model: {size.d_model}, n_heads: {size.n_heads},
        n_layers: {size.n_layers}, ff_mult: {size.ff_mult}}}
data: {{source: "builtin:synthetic", num_samples: {num_samples},
       shape: [{size.steps}, {size.features}], num_classes: {size.classes}}}
optim: {{batch_size: {setting.batch}, num_epochs: {setting.epochs}}}
scaling: {{num_workers: {WORKERS}, strategy: {strategy}}}
tracking: {{enabled: false}}
"""
    return load_spec_text(text, [])


def last(run: DeeprigRun, metric: str) -> float:
    return run.epochs[-1].metrics[metric]


def per_rank(runs: list[DeeprigRun], metric: str) -> list[float]:
    """Each rank's figure from the last epoch, the largest over the repeats."""
    return [max(last(run, f"{metric}.rank{rank}") for run in runs) for rank in range(WORKERS)]


def sharding_rows(setting: Setting = FULL, console: Console | None = None) -> list[Row]:
    import sharding_parity
    from deeprig.cluster.session import ray_session
    from floors.plain_sharding import measure

    console = console or Console()
    console.print("  deeprig parity: ddp vs fsdp, 2 ranks -> 1 (gloo, no Ray)")
    parity = sharding_parity.measure()
    plain: dict[str, list[PlainRun]] = {s: [] for s in STRATEGIES}
    deeprig: dict[str, list[DeeprigRun]] = {s: [] for s in STRATEGIES}
    with tempfile.TemporaryDirectory() as tmp, ray_session():
        for r in range(setting.repeats):
            # interleaved, each side first in turn, so a shared machine's drift lands on both
            for strategy in STRATEGIES if r % 2 == 0 else STRATEGIES[::-1]:
                sides = ("plain", "deeprig") if r % 2 == 0 else ("deeprig", "plain")
                for side in sides:
                    console.print(f"  repeat {r + 1}/{setting.repeats}: {side} {strategy}")
                    if side == "plain":
                        plain[strategy].append(
                            measure(
                                strategy,
                                setting.size,
                                setting.batch,
                                setting.plain_steps,
                                setting.plain_warmup,
                            )
                        )
                    else:
                        spec = job_spec(setting, strategy)
                        deeprig[strategy].append(run_deeprig_train(spec, Path(tmp), strategy))
    return (
        memory_rows(setting, plain, deeprig)
        + speed_rows(setting, plain, deeprig)
        + parity_rows(parity, deeprig)
    )


def _model_note(setting: Setting) -> str:
    size = setting.size
    parameters = sum(p.numel() for p in size.build().parameters())
    return (
        f"transformer {parameters / 1e6:.1f}M parameters (d_model {size.d_model}, "
        f"{size.n_layers} blocks), {size.steps} steps x {size.features} features, batch "
        f"{setting.batch} per rank, AdamW, 1 torch thread per rank"
    )


def memory_rows(
    setting: Setting, plain: dict[str, list[PlainRun]], deeprig: dict[str, list[DeeprigRun]]
) -> list[Row]:
    state = {s: max(b for run in plain[s] for b in run.state_bytes) for s in STRATEGIES}
    plain_rss = {
        s: [max(run.peak_rss[rank] for run in plain[s]) for rank in range(WORKERS)]
        for s in STRATEGIES
    }
    held = {s: per_rank(deeprig[s], "memory.params_held") for s in STRATEGIES}
    peak = {s: per_rank(deeprig[s], "memory.peak_bytes") for s in STRATEGIES}
    return [
        Row(
            FIGURE,
            "param+grad+AdamW bytes per rank, FSDP vs DDP, 2 workers",
            "FSDP MiB",
            state["fsdp"] / MIB,
            "DDP MiB",
            state["ddp"] / MIB,
            Target("<=", 0.55),
            setting.repeats,
            f"{_model_note(setting)}; counted after one step, the larger rank's; FSDP units "
            "as deeprig's shard: auto (each block, then the root)",
        ),
        Row(
            FIGURE,
            "deeprig memory.params_held per rank, FSDP vs DDP",
            "FSDP params",
            max(held["fsdp"]),
            "DDP params",
            max(held["ddp"]),
            None,
            setting.repeats,
            "the larger rank's, from each job's last epoch",
        ),
        Row(
            FIGURE,
            "deeprig peak memory per worker (RSS high-water), FSDP vs DDP",
            "FSDP MiB",
            max(peak["fsdp"]) / MIB,
            "DDP MiB",
            max(peak["ddp"]) / MIB,
            None,
            setting.repeats,
            "memory.peak_bytes per rank, FSDP "
            + ", ".join(f"{b / MIB:.0f}" for b in peak["fsdp"])
            + " MiB, DDP "
            + ", ".join(f"{b / MIB:.0f}" for b in peak["ddp"])
            + " MiB (a Ray Train worker, which also writes each epoch's checkpoint); the plain "
            + "scripts' ranks: FSDP "
            + ", ".join(f"{b / MIB:.0f}" for b in plain_rss["fsdp"])
            + ", DDP "
            + ", ".join(f"{b / MIB:.0f}" for b in plain_rss["ddp"])
            + " MiB",
        ),
    ]


def speed_rows(
    setting: Setting, plain: dict[str, list[PlainRun]], deeprig: dict[str, list[DeeprigRun]]
) -> list[Row]:
    global_batch = setting.batch * WORKERS

    def samples_per_s(strategy: str) -> float:
        return median(
            median(run.steady("samples_per_s", setting.warmup)) for run in deeprig[strategy]
        )

    def plain_step_s(strategy: str) -> float:
        return median(run.step_s for run in plain[strategy])

    steady = (
        f"deeprig: epochs {setting.warmup + 1}-{setting.epochs} of {setting.steps_per_epoch} "
        f"steps (median samples_per_s); plain: steps {setting.plain_warmup + 1}-"
        f"{setting.plain_steps} (rank 0's mean step)"
    )
    return [
        Row(
            FIGURE,
            "FSDP step time, 2 workers: deeprig vs plain FSDP2 script",
            "deeprig step ms",
            global_batch / samples_per_s("fsdp") * 1e3,
            "plain step ms",
            plain_step_s("fsdp") * 1e3,
            Target("<=", 1.05),
            setting.repeats,
            f"{steady}; benchmarks/floors/plain_sharding.py",
        ),
        Row(
            FIGURE,
            "DDP samples/s, 2 workers: deeprig vs plain DDP script",
            "deeprig samples/s",
            samples_per_s("ddp"),
            "plain samples/s",
            global_batch / plain_step_s("ddp"),
            Target(">=", 0.95),
            setting.repeats,
            steady,
        ),
    ]


def parity_rows(parity, deeprig: dict[str, list[DeeprigRun]]) -> list[Row]:
    from sharding_parity import STEPS, max_relative, relative

    tolerance = 1e-3
    setting = (
        f"deeprig's steps in 2 gloo processes, a 2-block transformer, global batch 32, "
        f"{STEPS} steps (benchmarks/sharding_parity.py)"
    )
    ddp_loss, fsdp_loss = (last(deeprig[s][0], "train_loss") for s in STRATEGIES)
    return [
        Row(
            FIGURE,
            f"parity: training loss after {STEPS} steps, FSDP vs DDP",
            "relative difference",
            relative(parity.fsdp_losses[-1], parity.ddp_losses[-1]),
            "tolerance",
            tolerance,
            Target("<=", 1),
            1,
            f"{setting}; loss ddp {parity.ddp_losses[-1]:.6f}, fsdp "
            f"{parity.fsdp_losses[-1]:.6f}; largest over every step "
            f"{max_relative(parity.fsdp_losses, parity.ddp_losses):.1e}",
        ),
        Row(
            FIGURE,
            f"parity: validation accuracy after {STEPS} steps, FSDP vs DDP",
            "difference",
            abs(parity.fsdp_val[1] - parity.ddp_val[1]),
            "tolerance",
            tolerance,
            Target("<=", 1),
            1,
            f"accuracy ddp {parity.ddp_val[1]:.4f}, fsdp {parity.fsdp_val[1]:.4f} (512 rows: "
            f"one row is 2e-3); validation loss ddp {parity.ddp_val[0]:.6f}, fsdp "
            f"{parity.fsdp_val[0]:.6f}",
        ),
        Row(
            FIGURE,
            "2 FSDP ranks' checkpoint resumed on 1: loss curve vs never stopped",
            "max relative difference",
            max_relative(parity.resumed_losses, parity.straight_second_half),
            "tolerance",
            tolerance,
            Target("<=", 1),
            1,
            f"steps {STEPS // 2 + 1}-{STEPS}, every step's loss; the checkpoint is deeprig's "
            "sharded TrainState (DCP), read whole by one process",
        ),
        Row(
            FIGURE,
            "deeprig jobs above: last epoch's train_loss, FSDP vs DDP",
            "relative difference",
            relative(fsdp_loss, ddp_loss),
            "tolerance",
            tolerance,
            Target("<=", 1),
            1,
            f"same seed and batches through Ray Train: ddp {ddp_loss:.6f}, fsdp {fsdp_loss:.6f}",
        ),
    ]


def rows(quick: bool = False, console: Console | None = None) -> list[Row]:
    """The figures `make bench` quotes (quick: a small transformer, a smoke run)."""
    return sharding_rows(QUICK if quick else FULL, console)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, a small transformer")
    args = parser.parse_args()
    console = make_console()
    started = time.perf_counter()
    found = rows(quick=args.quick, console=console)
    print_rows(found, "sharding: FSDP vs DDP, deeprig vs plain PyTorch", console)
    console.print(f"python {' '.join(sys.argv)}  |  {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
