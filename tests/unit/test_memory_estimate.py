"""A worker's memory estimate (training/memory_estimate.py): its arithmetic on a network
whose sizes can be written down, fsdp's share, and `deeprig validate` printing it and
refusing a job that cannot fit."""

from __future__ import annotations

import pytest
import torch
from deeprig.training.memory_estimate import estimate_memory, fitting_workers
from torch import nn

# 10 -> 20 -> 3: (10*20 + 20) + (20*3 + 3) = 283 float32 parameters
PARAMS = 283 * 4


def _mlp() -> nn.Sequential:
    with torch.device("meta"):
        return nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 3))


@pytest.mark.parametrize(
    ("optimizer", "momentum", "states"), [("adamw", 0.0, 2), ("sgd", 0.9, 1), ("sgd", 0.0, 0)]
)
def test_the_estimate_of_a_known_mlp_adds_up(optimizer, momentum, states):
    model = _mlp()
    estimate = estimate_memory(model, torch.zeros(10), 4, [model[0], model[2]], optimizer, momentum)
    assert estimate.parameters == estimate.gradients == PARAMS
    assert estimate.optimizer == states * PARAMS
    # saved for backward: the 4x10 input (first Linear), the 4x20 ReLU output (the ReLU
    # and the second Linear save the same one); weights are not activations
    assert estimate.activations == (4 * 10 + 4 * 20) * 4
    assert estimate.largest_unit == (10 * 20 + 20) * 4
    assert estimate.per_worker("ddp", 2) == (2 + states) * PARAMS + estimate.activations


def test_activations_measured_on_one_real_sample_scale_with_the_batch():
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 3))  # on CPU
    assert estimate_memory(model, torch.zeros(10), 8, [], "adamw").activations == 8 * (10 + 20) * 4


class ReadsItsData(nn.Module):
    """A forward the meta device cannot run: it branches on its input's values."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(10, 20)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).relu() if bool(x.ge(0).all()) else x


def test_a_forward_that_reads_its_data_is_measured_on_one_cpu_sample_unless_too_big(
    monkeypatch,
):
    import deeprig.training.memory_estimate as memory_estimate

    with torch.device("meta"):
        model = ReadsItsData()
    # the Linear's input and its output (saved by relu), one sample, times 8
    assert estimate_memory(model, torch.zeros(10), 8, [], "adamw").activations == 8 * 30 * 4

    monkeypatch.setattr(memory_estimate, "CPU_SAMPLE_MAX_BYTES", 0)
    with torch.device("meta"):
        model = ReadsItsData()
    unmeasured = estimate_memory(model, torch.zeros(10), 8, [], "adamw")
    assert unmeasured.activations is None
    assert unmeasured.per_worker("ddp", 1) == 4 * (10 * 20 + 20) * 4


def test_fsdp_divides_the_state_by_about_the_worker_count():
    with torch.device("meta"):
        model = nn.Sequential(*(nn.Linear(256, 256) for _ in range(8)))
    estimate = estimate_memory(model, torch.zeros(256), 1, list(model), "adamw")
    state = estimate.per_worker("ddp", 4) - estimate.activations
    sharded = estimate.per_worker("fsdp", 4) - estimate.activations
    # a quarter of it, plus one unit gathered whole (an eighth of the model)
    assert sharded == pytest.approx(state / 4 + estimate.parameters / 8, rel=0.01)
    assert estimate.per_worker("fsdp", 1) == estimate.per_worker("ddp", 1)
    at_four = estimate.per_worker("fsdp", 4)
    assert fitting_workers(estimate, lambda workers: at_four, 2) == 4
    assert fitting_workers(estimate, lambda workers: 1.0, 2) is None


def _validate(*settings: str):
    from deeprig.cli import app
    from typer.testing import CliRunner

    from tests.conftest import JOBS

    args = [a for s in settings for a in ("--set", s)]
    return CliRunner().invoke(
        app, ["validate", str(JOBS / "quickstart.yaml"), *args], env={"COLUMNS": "80"}
    )


def test_validate_prints_the_estimate_under_ddp_and_fsdp_in_80_columns(deeprig_home):
    result = _validate("scaling.num_workers=2")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    first = next(i for i, line in enumerate(lines) if "memory a worker" in line)
    assert "ddp" in lines[first] and "fsdp over 2" in lines[first], result.output
    assert "params" in lines[first + 1] and "adamw" in lines[first + 1], result.output
    assert all(len(line) <= 80 for line in lines), result.output


def test_a_job_bigger_than_a_worker_exits_2_naming_fsdp_and_the_workers_that_fit(
    deeprig_home,
):
    # quickstart's MLP: ~349 KiB a worker under ddp, ~247 KiB under fsdp over 2
    result = _validate("scaling.num_workers=2", "scaling.memory_per_worker=300KiB")
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())
    assert "scaling.strategy:" in output, output
    assert "scaling.strategy: fsdp with scaling.num_workers: 2" in output, output

    fsdp = _validate(
        "scaling.num_workers=2", "scaling.memory_per_worker=300KiB", "scaling.strategy=fsdp"
    )
    assert fsdp.exit_code == 0, fsdp.output


def test_a_batch_too_big_for_any_worker_count_names_the_batch_size(deeprig_home):
    result = _validate("scaling.memory_per_worker=50KiB")
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())
    assert "optim.batch_size" in output and "no fsdp worker count fits" in output, output
