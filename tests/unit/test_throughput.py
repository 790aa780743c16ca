"""Throughput as people compare it: FLOPs counted by torch's counter as the hand formula
says, the hardware's peak (a GPU's by its name, a CPU's measured once and kept), MFU
arithmetic, tokens per sample, and the loop's epochs reporting them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from deeprig.cluster.resources import ClusterResources
from deeprig.data import build_datasets
from deeprig.data.info import DataInfo
from deeprig.report_keys import WORKER_PARAMS
from deeprig.runners import train
from deeprig.runners.train_trainer import worker_config
from deeprig.spec.loader import load_spec
from deeprig.training import flops
from deeprig.training.flops import count_flops, cpu_peak
from deeprig.training.loop import run_training
from deeprig.training.throughput import Peak, Throughput, gpu_peak, mfu, tokens_per_sample
from torch import nn

from tests.unit.conftest import EventSink, InProcessSession

JOBS = Path(__file__).parents[2] / "jobs"


def test_a_linear_layer_counts_2_in_out_batch_forward_and_as_much_again_for_its_weights():
    batch, width_in, width_out = 16, 32, 8
    forward = 2 * batch * width_in * width_out
    # The input needs no gradient: backward computes the weight's only.
    assert count_flops(nn.Linear(width_in, width_out), torch.ones(batch, width_in)) == 2 * forward
    # A second layer's input gradient is computed too: 3 matmuls of its size.
    two = nn.Sequential(nn.Linear(width_in, width_out), nn.Linear(width_out, width_out))
    second = 2 * batch * width_out * width_out
    assert count_flops(two, torch.ones(batch, width_in)) == 2 * forward + 3 * second


def test_counting_accumulates_no_gradient_and_meta_tensors_count_as_real_ones():
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    real = count_flops(net, torch.randn(5, 8))
    assert all(p.grad is None for p in net.parameters())
    with torch.device("meta"):
        on_meta = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    assert count_flops(on_meta, torch.ones(5, 8, device="meta")) == real


def test_an_lstm_on_cpu_is_counted_like_on_the_meta_device():
    # (oneDNN's fused LSTM kernel is invisible to the counter: only the head would count)
    lstm = nn.LSTM(8, 64, batch_first=True)
    with torch.device("meta"):
        meta = nn.LSTM(8, 64, batch_first=True)
    real = count_flops(_First(lstm), torch.randn(4, 10, 8))
    assert real == count_flops(_First(meta), torch.ones(4, 10, 8, device="meta"))
    assert real > 2 * 4 * 10 * (8 + 64) * 4 * 64  # the forward's gate matmuls alone


class _First(nn.Module):
    def __init__(self, rnn: nn.Module):
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        return self.rnn(x)[0]


@pytest.mark.parametrize(
    ("name", "precision", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", "bf16", 989),
        ("NVIDIA H100 PCIe", "bf16", 756),
        ("NVIDIA H200", "fp32", 67),
        ("NVIDIA A100-SXM4-80GB", "fp32", 19.5),
        ("NVIDIA A10G", "bf16", 125),
        ("NVIDIA L4", "bf16", 121),
        ("Tesla T4", "fp16", 65),
    ],
)
def test_a_gpus_peak_comes_from_its_datasheet_row(name, precision, tflops):
    peak = gpu_peak(name, precision)
    assert peak.flops_per_s == pytest.approx(tflops * 1e12)
    assert peak.source.startswith("datasheet: " + name)


@pytest.mark.parametrize(
    ("name", "precision"),
    [("NVIDIA L40S", "bf16"), ("NVIDIA GeForce GTX 1080", "fp32"), ("Tesla T4", "bf16")],
)
def test_an_unknown_gpu_or_precision_has_no_peak_and_says_there_is_no_mfu(name, precision):
    peak = gpu_peak(name, precision)  # (an L40S is not an L4)
    assert peak.flops_per_s is None and peak.source.endswith("no mfu")
    metrics = Throughput(1e6, None, peak).metrics(100.0, 2)
    assert "mfu" not in metrics and metrics["model_flops_per_s"] == 1e8
    assert Throughput(1e6, None, peak).params()["peak_flops_source"] == peak.source


def test_mfu_is_model_flops_over_every_workers_peak():
    throughput = Throughput(2e6, 64, Peak(1e9, "measured"))
    metrics = throughput.metrics(samples_per_s=1000.0, world_size=4)
    assert metrics == {
        "tokens_per_s": 64_000.0,
        "model_flops_per_s": 2e9,
        "model_flops_per_s_per_worker": 5e8,
        "mfu": pytest.approx(0.5),
    }
    assert mfu(2e9, 4e9) == 0.5
    assert throughput.params() == {
        "flops_per_sample": "2e+06",
        "peak_flops_per_s": "1e+09",
        "peak_flops_source": "measured",
    }


def test_tokens_per_sample_is_the_sequence_a_sample_feeds():
    text = load_spec(JOBS / "stdlib_transformer.yaml").data
    tokens = DataInfo((64,), "language_model", 500, 1000, 100, "int64", vocab_size=500)
    assert tokens_per_sample(text, tokens) == 64
    digits = load_spec(JOBS / "quickstart.yaml").data
    assert tokens_per_sample(digits, DataInfo((8, 8), "classification", 10, 1797, 360)) is None
    speech = load_spec(JOBS / "speech_commands.yaml", ["data.view=image"]).data
    spectrogram = DataInfo((1, 40, 101), "classification", 5, 100, 20)
    assert tokens_per_sample(speech, spectrogram) == 101  # frames


def test_a_cpus_peak_is_measured_once_per_node_and_kept(deeprig_home, monkeypatch):
    measured = []
    monkeypatch.setattr(flops, "matmul_peak", lambda threads: measured.append(threads) or 5e10)
    first, again = cpu_peak(1), cpu_peak(1)
    assert measured == [1] and first == again
    assert first.flops_per_s == 5e10 and first.source.startswith("measured: float32")
    cpu_peak(2)
    assert measured == [1, 2]  # another thread count is another peak
    assert (deeprig_home / "peaks.json").stat().st_mode & 0o077 == 0


def _one_epoch(spec_path: Path, *overrides: str) -> dict[str, Any]:
    """deeprig's loop for one epoch in this process, tracked: its report."""
    spec = load_spec(spec_path, ["scaling.num_workers=1", "optim.num_epochs=1", *overrides])
    checked = train.check(spec, ClusterResources(cpus=2, gpus=0, max_node_cpus=2))
    assert spec.data is not None and checked.data is not None
    prepared = build_datasets(spec.data, checked.data, spec.seed, 1, 1, True)
    session = InProcessSession()
    worker = worker_config(spec, checked, prepared.fitted, "run", EventSink(), prepared.arrays)
    run_training(worker, session)
    ((report, _),) = session.reports
    return report


def test_the_loops_epochs_report_throughput_and_rank_0_records_the_peak(deeprig_home):
    report = _one_epoch(JOBS / "quickstart.yaml")
    # The MLP 64 -> 128 -> 64 -> 10: forward 2 x, backward 2 x (weights) + 2 x (inputs past
    # the first layer) the multiply-adds of each layer.
    per_sample = 4 * 64 * 128 + 6 * 128 * 64 + 6 * 64 * 10
    assert report["model_flops_per_s"] == pytest.approx(per_sample * report["samples_per_s"])
    assert 0 < report["mfu"] < 1
    assert "tokens_per_s" not in report
    params = report[WORKER_PARAMS]  # (the controller's logger records them)
    assert params["flops_per_sample"] == str(per_sample)
    assert float(params["peak_flops_per_s"]) > 1e9 and "measured" in params["peak_flops_source"]


def test_a_language_models_tokens_and_flops_counted_over_real_rows(deeprig_home, tmp_path):
    # Its transformer's forward reads its token ids (the padding mask): not countable on
    # the meta device, so counted over the first rows of a real batch.
    rows = [f"def keep(x, {fruit}):\n    return {fruit}\n" for fruit in ["apple", "pear"] * 40]
    (tmp_path / "code.csv").write_text("text\n" + "".join(f'"{row}"\n' for row in rows))
    spec = tmp_path / "lm.yaml"
    spec.write_text(
        "name: lm\nkind: train\n"
        "model: {name: transformer, d_model: 16, n_heads: 2, n_layers: 1, causal: true}\n"
        f"data: {{source: text, path: {tmp_path / 'code.csv'}, text: text, "
        "task: language_model, block_size: 8, tokenizer: {kind: byte_bpe, vocab_size: 280}}\n"
        "optim: {batch_size: 16}\n"
    )
    report = _one_epoch(spec)
    assert report["tokens_per_s"] == pytest.approx(8 * report["samples_per_s"])
    assert 0 < report["mfu"] < 1
    params = report[WORKER_PARAMS]  # (the controller's logger records them)
    assert float(params["flops_per_sample"]) > 0
