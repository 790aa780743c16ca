"""Throughput as people compare it, pure arithmetic: samples/s becomes tokens/s (sequence
data), model FLOP/s (the model's FLOPs per sample, counted once before the run) and MFU,
model FLOP/s over the hardware's peak: a GPU's from its name in `GPU_PEAKS`, a CPU's
measured (training/flops.py).

Model FLOPs are those of one forward and backward pass as the model is written: the
matrix multiplies, convolutions and attention torch's flop counter knows, not the
optimizer, the norms, the activations or recomputation. MFU divides them by the peak of
every worker together, each worker's taken as rank 0's (workers alike)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from deeprig.data.info import DataInfo
from deeprig.spec.data import AudioData, DataSpec, TextData, TimeseriesData

Precision = Literal["bf16", "fp16", "fp32"]

TERA = 1e12

# Dense peaks (no structured sparsity) in TFLOP/s from NVIDIA's datasheets, by a pattern of
# `torch.cuda.get_device_name()`, the more specific first (an H100 NVL before an H100).
# fp32 is the CUDA cores' (torch leaves TF32 off for float32 matmuls by default); None:
# the chip has no tensor cores for that precision (a T4 has no bf16).
GPU_PEAKS: tuple[tuple[str, dict[Precision, float | None]], ...] = (
    ("H200 NVL", {"bf16": 835, "fp16": 835, "fp32": 60}),
    ("H200", {"bf16": 989, "fp16": 989, "fp32": 67}),
    ("H100 NVL", {"bf16": 835, "fp16": 835, "fp32": 60}),
    ("H100 PCIe", {"bf16": 756, "fp16": 756, "fp32": 51}),
    ("H100", {"bf16": 989, "fp16": 989, "fp32": 67}),  # SXM: "NVIDIA H100 80GB HBM3"
    ("A100", {"bf16": 312, "fp16": 312, "fp32": 19.5}),
    ("A10G", {"bf16": 125, "fp16": 125, "fp32": 31.2}),  # AWS's A10: the A10 datasheet
    ("L4", {"bf16": 121, "fp16": 121, "fp32": 30.3}),
    ("T4", {"bf16": None, "fp16": 65, "fp32": 8.1}),
)


@dataclass(frozen=True)
class Peak:
    """One worker's peak FLOP/s and where the figure comes from (recorded as params);
    None: not known, `source` says why (no mfu then)."""

    flops_per_s: float | None
    source: str


def gpu_peak(name: str, precision: Precision) -> Peak:
    """The datasheet peak of the GPU `name` at `precision` (unknown unless in `GPU_PEAKS`)."""
    for pattern, peaks in GPU_PEAKS:
        if re.search(rf"\b{re.escape(pattern)}\b", name, re.IGNORECASE):
            tflops = peaks[precision]
            if tflops is None:
                return Peak(None, f"{name} has no {precision} peak in its datasheet: no mfu")
            return Peak(tflops * TERA, f"datasheet: {name}, {precision} dense")
    return Peak(None, f"GPU {name!r} is not in deeprig's table of peaks: no mfu")


def mfu(model_flops_per_s: float, peak_flops_per_s: float) -> float:
    """Model FLOPs utilisation: the fraction of the peak the model's own FLOPs reach."""
    return model_flops_per_s / peak_flops_per_s


def tokens_per_sample(data_spec: DataSpec | None, info: DataInfo | None) -> int | None:
    """The tokens one sample feeds its model: token ids (text: the padded length a
    classifier reads, a language model's block), time steps (a series' window, an audio
    clip's frames); None for data that is not a sequence."""
    if data_spec is None or info is None:
        return None
    if isinstance(data_spec, TextData | TimeseriesData):
        return info.input_shape[0]
    if isinstance(data_spec, AudioData):  # (frames, mels), or (1, mels, frames)
        return info.input_shape[0] if data_spec.view == "frames" else info.input_shape[-1]
    return None


@dataclass(frozen=True)
class Throughput:
    """What an epoch's samples/s becomes, given what is known of the model and hardware."""

    flops_per_sample: float | None  # None: not counted (the metrics leave it out)
    tokens_per_sample: int | None
    peak: Peak  # one worker's

    def metrics(self, samples_per_s: float, world_size: int) -> dict[str, float]:
        """`tokens_per_s`, `model_flops_per_s` (all workers), its `_per_worker` share and
        `mfu`, each where it is known."""
        metrics = {}
        if self.tokens_per_sample is not None:
            metrics["tokens_per_s"] = samples_per_s * self.tokens_per_sample
        if self.flops_per_sample is not None:
            total = samples_per_s * self.flops_per_sample
            metrics["model_flops_per_s"] = total
            metrics["model_flops_per_s_per_worker"] = total / world_size
            if self.peak.flops_per_s is not None:
                metrics["mfu"] = mfu(total, self.peak.flops_per_s * world_size)
        return metrics

    def params(self) -> dict[str, str]:
        """What the run records once: the FLOPs per sample and the peak used."""
        params = {}
        if self.flops_per_sample is not None:
            params["flops_per_sample"] = f"{self.flops_per_sample:.6g}"
        if self.peak.flops_per_s is not None:
            params["peak_flops_per_s"] = f"{self.peak.flops_per_s:.4g}"
        params["peak_flops_source"] = self.peak.source
        return params
