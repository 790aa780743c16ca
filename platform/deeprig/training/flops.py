"""FLOPs counted and measured on a worker before its first epoch: the model's per sample
(one forward and backward under torch's `FlopCounterMode`) and the worker's peak per
second (a GPU's from the datasheet table in training/throughput.py; a CPU's measured as the
fastest of a few float32 matmuls at the worker's thread count, once per node: the figure is
kept under the deeprig home, so every job on the node divides by the same peak, and MFUs
compare).

Counted on the worker, not the driver: a dispatch mode's first use imports torch's dynamo
(2.5-5 s here), which a worker imports anyway at its first optimizer step and the driver
only after its workers have started. The count runs on a copy of the network built on the
meta device over a batch of the worker's shape (no memory, no arithmetic: it depends on
shapes only); a network whose forward reads its data (a padding mask it tests, packed
sequences) is counted on CPU over the first rows of a real batch instead."""

from __future__ import annotations

import fcntl
import json
import logging
import socket
import time
import warnings

import torch
from torch import nn

from deeprig.data.shard import ShardBatches
from deeprig.training.memory_estimate import CPU_SAMPLE_MAX_BYTES
from deeprig.training.parts import TrainParts, autocast_dtype
from deeprig.training.sharding import is_sharded
from deeprig.training.throughput import Peak, Precision, Throughput, gpu_peak, tokens_per_sample
from deeprig.training.worker_config import WorkerConfig

log = logging.getLogger(__name__)

AUTOCAST_PRECISION: dict[torch.dtype, Precision] = {torch.bfloat16: "bf16", torch.float16: "fp16"}
REAL_ROWS = 8  # of a real batch, for a network that cannot be counted on the meta device
MATMUL_SIZE = 1024  # n of the n x n matmuls: 2 GFLOP each, tens of ms on one core
MATMUL_BEST_OF = 5


def worker_throughput(
    worker: WorkerConfig,
    parts: TrainParts,
    train: ShardBatches,
    world_size: int,
    device: torch.device,
) -> Throughput:
    """What this worker's epochs report beside samples/s: the FLOPs per sample of a batch
    of its size, the tokens a sample feeds, its peak at the precision it computes in (a
    sharded model in its FSDP policy's dtype, not under autocast)."""
    spec = worker.spec
    precision = parts.autocast_dtype
    if is_sharded(parts.model):
        precision = autocast_dtype(spec.scaling.mixed_precision, device)
    return Throughput(
        model_flops_per_sample(worker, train, spec.batch_per_worker(world_size)),
        tokens_per_sample(spec.data, worker.data),
        worker_peak(device, precision, worker.threads_per_worker),
    )


def model_flops_per_sample(worker: WorkerConfig, train: ShardBatches, rows: int) -> float | None:
    """FLOPs of one sample's forward and backward through the job's network, from a batch
    of `rows`; None, said in the worker's log: not countable (a streamed shard has no real
    batch to spare, a network over CPU_SAMPLE_MAX_BYTES would have to be built for one, or
    the count failed: throughput metrics never stop a job)."""
    try:
        flops = _flops_per_sample(worker, train, rows)
    except Exception:
        log.warning("the model's FLOPs could not be counted: no model_flops_per_s, no mfu")
        return None
    if flops is None:
        log.warning(
            "the model's FLOPs not counted (its forward reads its data, and no real batch "
            "is at hand or it is too big to build twice): no mfu"
        )
    return flops


def _flops_per_sample(worker: WorkerConfig, train: ShardBatches, rows: int) -> float | None:
    from deeprig.models import build_model

    data = worker.data
    dtype = torch.long if data.input_dtype == "int64" else torch.float32

    def built() -> nn.Module:
        return build_model(worker.spec.model, data.input_shape, data.num_outputs, data.vocab_size)

    with torch.device("meta"):
        net = built()
    try:
        batch = torch.ones((rows, *data.input_shape), dtype=dtype, device="meta")  # (no pads)
        return count_flops(net, batch) / rows
    except Exception:  # the forward reads its data (meta tensors hold none)
        pass
    too_big = sum(p.numel() * p.element_size() for p in net.parameters()) > CPU_SAMPLE_MAX_BYTES
    if too_big or train.num_rows is None:
        return None
    real = next(train.epoch(0, shuffle=False))[0][:REAL_ROWS].cpu()
    return count_flops(built(), real) / len(real)


def count_flops(model: nn.Module, batch: torch.Tensor) -> int:
    """FLOPs of one forward and backward of `model`, as it is (training: dropout on), over
    `batch`; meta tensors count as real ones do, the count depending on shapes only. No
    gradient is accumulated; a model in training mode moves its batch-norm statistics, so
    a model of its own is counted, not the one being trained."""
    from torch.utils.flop_counter import FlopCounterMode

    trainable = [p for p in model.parameters() if p.requires_grad]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the flags' own deprecation notice)
        # oneDNN's fused LSTM kernel is invisible to the counter; torch's own is not.
        with torch.backends.mkldnn.flags(enabled=False), FlopCounterMode(display=False) as c:
            out = model(batch)
            if trainable:
                torch.autograd.grad(out.float().sum(), trainable, allow_unused=True)
    return c.get_total_flops()


def worker_peak(device: torch.device, autocast: torch.dtype | None, threads: int) -> Peak:
    """One worker's peak FLOP/s at the precision its matmuls run in."""
    precision: Precision = "fp32"
    if autocast is not None:
        precision = AUTOCAST_PRECISION[autocast]
    if device.type == "cuda":
        peak = gpu_peak(torch.cuda.get_device_name(device), precision)
        if peak.flops_per_s is None:
            log.warning("%s", peak.source)
        return peak
    return cpu_peak(threads)


def cpu_peak(threads: int) -> Peak:
    """This node's float32 matmul peak at `threads` threads, measured once and kept."""
    from deeprig.tracking.store import deeprig_home, private_file

    host = socket.gethostname()
    key = f"{host} fp32 {threads} thread(s) torch {torch.__version__}"
    path = private_file(deeprig_home() / "peaks.json")
    with open(path, "r+") as file:
        fcntl.flock(file, fcntl.LOCK_EX)  # (one worker of the node measures; the rest read)
        text = file.read()
        known = json.loads(text) if text.strip() else {}
        if key not in known:
            known[key] = {"flops_per_s": matmul_peak(threads), "at": time.strftime("%F %T")}
            file.seek(0)
            file.truncate()
            json.dump(known, file, indent=1)
    entry = known[key]
    return Peak(
        entry["flops_per_s"],
        f"measured: float32 {MATMUL_SIZE}x{MATMUL_SIZE} matmul, {threads} thread(s) on {host} "
        f"at {entry['at']}",
    )


def matmul_peak(threads: int, n: int = MATMUL_SIZE, best_of: int = MATMUL_BEST_OF) -> float:
    """FLOP/s of the fastest of `best_of` n x n float32 matmuls at `threads` threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
        torch.matmul(a, b, out=out)  # warm-up: allocations, the thread pool
        best = float("inf")
        for _ in range(best_of):
            started = time.perf_counter()
            torch.matmul(a, b, out=out)
            best = min(best, time.perf_counter() - started)
    finally:
        torch.set_num_threads(previous)
    return 2 * n**3 / best
