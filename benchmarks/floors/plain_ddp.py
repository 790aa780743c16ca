"""The DDP floor for the scaling figure: the same CNN, data and per-process batch as a
deeprig worker, trained by `torch.distributed` (gloo) in 1 or 2 plain processes on this
machine, one torch thread each, no Ray. Besides samples/s it times the all-reduce: each
process runs the same steps once with DDP's gradient sync and once under `no_sync()`
(the sync skipped), and the difference per step is what the all-reduce costs.

    python benchmarks/floors/plain_ddp.py      # 1 vs 2 processes, ~30 s on 2 CPUs

It tells apart what 2 processes on these cores can give (the hardware and gloo) from what
deeprig's Ray Train path leaves of it (benchmarks/scaling.py quotes both).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@dataclass(frozen=True)
class DdpFloor:
    processes: int
    samples_per_s: float  # every process's training rows over the slowest one's seconds
    step_ms: float  # one step with the gradient all-reduce
    step_no_sync_ms: float  # the same step with the all-reduce skipped

    @property
    def allreduce_ms(self) -> float:
        return self.step_ms - self.step_no_sync_ms


def _worker(rank: int, world: int, spec_args: tuple, steps: int, init: str, out: str) -> None:
    from deeprig.data import describe_data
    from deeprig.data.builtin import builtin_arrays
    from deeprig.models import build_model
    from deeprig.training.optim import build_optimizer
    from scaling import cnn_spec

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    spec = cnn_spec(*spec_args)
    info = describe_data(spec.data)
    x, y = (torch.as_tensor(a) for a in builtin_arrays(spec.data, spec.seed))
    x, y = x[rank::world], y[rank::world]  # this rank's shard
    torch.manual_seed(spec.seed)
    model = build_model(spec.model, info.input_shape, info.num_outputs)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = build_optimizer(spec.optim, ddp.parameters())
    loss_fn = torch.nn.CrossEntropyLoss()
    batch = spec.optim.batch_size

    def run(count: int, sync: bool) -> float:
        dist.barrier()
        started = time.perf_counter()
        for step in range(count):
            i = (step * batch) % (len(y) - batch)
            optimizer.zero_grad(set_to_none=True)
            if sync:
                loss_fn(ddp(x[i : i + batch]), y[i : i + batch]).backward()
            else:
                with ddp.no_sync():
                    loss_fn(ddp(x[i : i + batch]), y[i : i + batch]).backward()
            optimizer.step()
        seconds = torch.tensor([time.perf_counter() - started])
        dist.all_reduce(seconds, op=dist.ReduceOp.MAX)  # the slowest rank sets the pace
        return float(seconds)

    run(10, True)  # warm-up
    with_sync, without = run(steps, True), run(steps, False)
    if rank == 0:
        Path(out).write_text(f"{with_sync} {without}")
    dist.barrier()  # (a rank that leaves while its peer still talks aborts in gloo)
    dist.destroy_process_group()


def measure(processes: int, num_samples: int = 6000, steps: int = 150) -> DdpFloor:
    spec_args = (num_samples, 1, 1)
    with tempfile.TemporaryDirectory() as tmp:
        init, out = f"file://{tmp}/rendezvous", os.path.join(tmp, "seconds")
        mp.spawn(_worker, (processes, spec_args, steps, init, out), nprocs=processes)
        with_sync, without = (float(v) for v in Path(out).read_text().split())
    from scaling import cnn_spec

    batch = cnn_spec(*spec_args).optim.batch_size
    return DdpFloor(
        processes,
        processes * steps * batch / with_sync,
        with_sync / steps * 1000,
        without / steps * 1000,
    )


def main() -> int:
    for processes in (1, 2):
        floor = measure(processes)
        print(
            f"{processes} process(es): {floor.samples_per_s:.0f} samples/s, step "
            f"{floor.step_ms:.1f} ms, without the all-reduce {floor.step_no_sync_ms:.1f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
