"""FSDP and sharded checkpoints on plain torch.distributed (gloo, processes spawned here,
no Ray): each rank holds about half the parameters, FSDP's gradient accumulation steps
like one big batch and like DDP, and a checkpoint written by N ranks is read back whole by
M = 1, 2 or 3 ranks (DCP reshards on load)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from deeprig.data.shard import ShardBatches
from deeprig.models import build_model
from deeprig.spec.model import MLPConfig
from deeprig.spec.scaling import FSDPSpec
from deeprig.spec.train import TrainSpec
from deeprig.training.epoch import Position, StepParts, train_epoch
from deeprig.training.sharding import (
    AUTO_UNIT_MIN_PARAMS,
    family_units,
    fsdp_units,
    lockstep,
    parameters_held,
    shard_model,
)
from deeprig.training.state import TrainState
from torch import nn

from tests.unit.test_training_steps import TableShard

MLP = MLPConfig(name="mlp", hidden=[64, 32])
SPEC = TrainSpec.model_validate(
    {
        "name": "sharded",
        "kind": "train",
        "model": MLP.model_dump(),
        "data": {"source": "builtin:synthetic", "shape": [6], "num_classes": 3},
        "scaling": {"strategy": "fsdp"},
    }
)
ROWS_PER_RANK = 40  # batches of 8: five micro-batches, the last group of two a partial one


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(MLP, (6,), 3)


def _sharded(model: nn.Module, fsdp: FSDPSpec = SPEC.scaling.fsdp) -> nn.Module:
    units = fsdp_units(model, "auto", family_units(MLP))
    return shard_model(model, fsdp, units, None, torch.device("cpu"))


def _all_rows(world: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(ROWS_PER_RANK * world, 6, generator=gen)
    y = torch.randint(0, 3, (ROWS_PER_RANK * world,), generator=gen)
    return x, y


def _rank_rows(rank: int, world: int) -> TableShard:
    x, y = _all_rows(world)
    return TableShard(x[rank::world], y[rank::world])


def _train(
    model: nn.Module,
    rank: int,
    world: int,
    batch: int,
    accumulate: int,
    rows: TableShard | None = None,
):
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    parts = StepParts(
        model=model,
        optimizer=optimizer,
        scaler=torch.amp.GradScaler("cuda", enabled=False),
        loss_fn=nn.CrossEntropyLoss(reduction="sum"),
        classification=True,
        autocast_dtype=None,
        accumulate_steps=accumulate,
        grad_clip_norm=1.0,  # the global norm over every rank's shards
        world_size=world,
    )
    shard = ShardBatches(
        rows or _rank_rows(rank, world), batch, torch.device("cpu"), torch.long, True, seed=rank
    )
    train_epoch(parts, shard, Position(epoch=0), lambda *_: None)
    return optimizer


def _whole(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The full (model, optimizer) state, gathered from every rank into rank 0, by name."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state, optimizer_state = get_state_dict(model, optimizer, options=options)
    return {"model": model_state, "optimizer": optimizer_state.get("state", {})}


def _state(model: nn.Module, optimizer: torch.optim.Optimizer) -> TrainState:
    from deeprig.training.shards import sharded_state_dicts

    model_state, optimizer_state = sharded_state_dicts(model, optimizer)
    return TrainState(
        model=model_state,
        optimizer=optimizer_state,
        scheduler={},
        scaler={},
        epoch=0,
        metrics={},
        spec=SPEC.model_dump(mode="json"),
        input_shape=(6,),
        num_outputs=3,
        task="classification",
        run_id=None,
        sharded=True,
    )


def _clipped(rank: int, world: int) -> dict:
    """One step's gradients clipped to norm 0.1 over the shards, beside the same step's on
    the whole model in one process (every rank's rows): FSDP averages the ranks' gradients,
    and clip_grad_norm_ over DTensor shards must see the global norm, not its rank's."""
    import torch.nn.functional as F
    from torch.distributed.tensor import DTensor

    def whole(t: torch.Tensor) -> torch.Tensor:
        return t.full_tensor() if isinstance(t, DTensor) else t

    sharded, single = _sharded(_model()), _model()
    rows, (x, y) = _rank_rows(rank, world), _all_rows(world)
    F.cross_entropy(sharded(rows.x), rows.y).backward()
    F.cross_entropy(single(x), y).backward()
    norms = [whole(nn.utils.clip_grad_norm_(m.parameters(), 0.1)) for m in (sharded, single)]
    return {
        "norms": norms,
        "sharded": {n: whole(p.grad) for n, p in sharded.named_parameters()},
        "single": {n: p.grad for n, p in single.named_parameters()},
    }


def _diverging(rank: int, world: int) -> dict:
    """Rank 1's rows are NaN, rank 0's finite: where each rank stops, and whether any
    optimiser step moved its shards first."""
    from deeprig.training.guards import NonFiniteLoss
    from torch.distributed.tensor import DTensor

    model = _sharded(_model())
    before = [
        p.to_local().clone() if isinstance(p, DTensor) else p.clone() for p in model.parameters()
    ]
    rows = _rank_rows(rank, world)
    if rank == 1:
        rows.x[:] = float("nan")
    try:
        _train(model, rank, world, batch=8, accumulate=1, rows=rows)
    except NonFiniteLoss as stop:
        after = [p.to_local() if isinstance(p, DTensor) else p for p in model.parameters()]
        return {
            "stopped_at": (stop.epoch, stop.step),
            "moved": any(not torch.equal(a, b) for a, b in zip(after, before, strict=True)),
        }
    return {"stopped_at": None}


def _leave() -> None:
    """End a spawned rank without the interpreter's teardown. Every rank waits for the
    others, then leaves the group; exiting through Python's finalisation can still abort
    the process (SIGABRT, "terminate called without an active exception") while gloo's
    C++ threads let go of tensors after the interpreter is gone -- a torch teardown race
    (pytorch/pytorch#179291) that failed CI once with every result already written."""
    import os
    import sys

    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _two_ranks(rank: int, world: int, folder: str) -> None:
    """Train and save on 2 ranks; read the 1-process checkpoint back sharded."""
    out = Path(folder)
    dist.init_process_group(
        "gloo", init_method=f"file://{out}/rendezvous", rank=rank, world_size=world
    )
    results: dict = {}
    model = _sharded(_model())
    results["held"] = parameters_held(model)
    optimizer = _train(model, rank, world, batch=8, accumulate=2)
    results["accumulated"] = _whole(model, optimizer)
    recomputed = _sharded(_model(), FSDPSpec(activation_checkpointing=True))
    recomputed_optimizer = _train(recomputed, rank, world, batch=8, accumulate=2)
    results["recomputed"] = _whole(recomputed, recomputed_optimizer)
    # Validation in lock-step: rank 0 has one batch, rank 1 three; both run three forwards.
    batches = [(torch.zeros(2, 6), torch.zeros(2, dtype=torch.long))] * (1 + 2 * rank)
    results["lockstep"] = [len(y) for _, y in lockstep(batches, torch.device("cpu"))]
    big = _sharded(_model())
    results["big_batch"] = _whole(big, _train(big, rank, world, batch=16, accumulate=1))
    results["clipped"] = _clipped(rank, world)
    stopped = _diverging(rank, world)
    gathered: list = [None] * world
    dist.all_gather_object(gathered, stopped)
    results["diverging"] = gathered
    ddp = nn.parallel.DistributedDataParallel(_model())
    ddp_optimizer = _train(ddp, rank, world, batch=8, accumulate=2)
    results["ddp"] = {n: p.detach().clone() for n, p in ddp.module.named_parameters()}
    del ddp_optimizer
    # Every rank writes its own folder, as under Ray Train.
    _state(model, optimizer).save(out / f"rank{rank}", rank)
    restored = _sharded(_model(seed=7))
    restored_optimizer = torch.optim.AdamW(restored.parameters(), lr=0.01)
    TrainState.load(out / "one_process").load_into(restored, restored_optimizer)
    results["from_one"] = _whole(restored, restored_optimizer)
    if rank == 0:
        torch.save(results, out / "two_ranks.pt")
    _leave()


def _three_ranks(rank: int, world: int, folder: str) -> None:
    out = Path(folder)
    dist.init_process_group(
        "gloo", init_method=f"file://{out}/rendezvous3", rank=rank, world_size=world
    )
    model = _sharded(_model(seed=7))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    TrainState.load(out / "merged").load_into(model, optimizer)
    whole = _whole(model, optimizer)
    if rank == 0:
        torch.save(whole, out / "three_ranks.pt")
    _leave()


def _assert_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        torch.testing.assert_close(value, b[key], rtol=1e-5, atol=1e-6, msg=key)


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, dict):
            _assert_same(value, b[key])
        else:
            torch.testing.assert_close(value, b[key], rtol=1e-6, atol=1e-7, msg=key)


@pytest.fixture(scope="module")
def sharded_runs(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("fsdp")
    # A checkpoint of one process (no process group: a one-worker fsdp job).
    one = _model(seed=1)
    one_optimizer = _train(one, 0, 1, batch=8, accumulate=1)
    (folder / "one_process").mkdir()
    _state(one, one_optimizer).save(folder / "one_process")
    mp.spawn(_two_ranks, args=(2, str(folder)), nprocs=2, join=True)
    merged = folder / "merged"
    for rank in (0, 1):  # what Ray Train does with every rank's folder
        shutil.copytree(folder / f"rank{rank}", merged, dirs_exist_ok=True)
    mp.spawn(_three_ranks, args=(3, str(folder)), nprocs=3, join=True)
    return {
        "folder": folder,
        "one": _whole(one, one_optimizer),
        "two": torch.load(folder / "two_ranks.pt", weights_only=False),
        "three": torch.load(folder / "three_ranks.pt", weights_only=False),
    }


def test_each_of_two_ranks_holds_about_half_the_parameters(sharded_runs):
    total = sum(p.numel() for p in _model().parameters())
    assert abs(sharded_runs["two"]["held"] - total / 2) <= 0.02 * total


def test_fsdp_accumulation_steps_like_one_big_batch_and_like_ddp(sharded_runs):
    two = sharded_runs["two"]
    _assert_same(two["accumulated"]["model"], two["big_batch"]["model"])
    for name, weights in two["ddp"].items():
        torch.testing.assert_close(two["accumulated"]["model"][name], weights, rtol=1e-5, atol=1e-6)
    # (it could fail: the training moved the weights away from their start)
    assert not torch.allclose(two["accumulated"]["model"]["net.1.weight"], _model().net[1].weight)


def test_activation_checkpointing_recomputes_the_same_gradients(sharded_runs):
    _assert_same(sharded_runs["two"]["recomputed"], sharded_runs["two"]["accumulated"])


def test_gradient_clipping_over_shards_clips_the_global_norm(sharded_runs):
    clipped = sharded_runs["two"]["clipped"]
    sharded_norm, single_norm = clipped["norms"]
    assert single_norm > 0.1  # (it could fail: the clip changes these gradients)
    torch.testing.assert_close(sharded_norm, single_norm, rtol=1e-5, atol=1e-6)
    _assert_close(clipped["sharded"], clipped["single"])


def test_a_non_finite_loss_on_one_rank_stops_every_rank_at_the_same_step(sharded_runs):
    rank0, rank1 = sharded_runs["two"]["diverging"]
    assert rank0["stopped_at"] == rank1["stopped_at"] == (0, 0)  # the first micro-batch
    assert not rank0["moved"] and not rank1["moved"]  # before any optimiser step


def test_a_rank_whose_validation_shard_ran_out_runs_empty_forwards(sharded_runs):
    assert sharded_runs["two"]["lockstep"] == [2, 0, 0]  # rank 0's: one real batch


def test_a_two_rank_checkpoint_is_one_folder_of_every_ranks_shards(sharded_runs):
    files = {p.name for p in (sharded_runs["folder"] / "merged" / "shards").iterdir()}
    assert files == {".metadata", "__0_0.distcp", "__1_0.distcp"}
    assert not (sharded_runs["folder"] / "rank1" / "checkpoint.pt").exists()  # rank 0's


def test_a_two_rank_checkpoint_resumes_on_one_process(sharded_runs):
    state = TrainState.load(sharded_runs["folder"] / "merged")
    model = _model(seed=7)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    state.load_into(model, optimizer)
    _assert_same(_whole(model, optimizer), sharded_runs["two"]["accumulated"])


def test_a_two_rank_checkpoint_resumes_on_three_ranks(sharded_runs):
    _assert_same(sharded_runs["three"], sharded_runs["two"]["accumulated"])


def test_a_one_process_checkpoint_resumes_on_two_ranks(sharded_runs):
    _assert_same(sharded_runs["two"]["from_one"], sharded_runs["one"])


def test_the_driver_reads_a_sharded_checkpoint_as_one_whole_model(sharded_runs):
    whole = TrainState.load(sharded_runs["folder"] / "merged").whole()
    assert not whole.sharded and whole.optimizer == {}
    _assert_same(whole.model, sharded_runs["two"]["accumulated"]["model"])
    rebuilt = TrainState.load(sharded_runs["folder"] / "merged").rebuild_model()
    _assert_same(rebuilt.state_dict(), whole.model)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(1000, 128)  # 128k parameters: a unit
        self.head = nn.Linear(128, 3)  # small: stays with the root


def test_auto_units_of_a_custom_model_are_its_large_children():
    net = Net()
    assert sum(p.numel() for p in net.embed.parameters()) > AUTO_UNIT_MIN_PARAMS
    assert fsdp_units(net, "auto", None) == [net.embed]
    assert fsdp_units(net, ["Linear"], None) == [net.head]
    mlp = _model()
    linears = [m for m in mlp.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 3 and fsdp_units(mlp, "auto", (nn.Linear,)) == linears


def _validate(*settings: str, job: str = "quickstart.yaml"):
    from deeprig.cli import app
    from typer.testing import CliRunner

    from tests.conftest import JOBS

    args = [a for s in settings for a in ("--set", s)]
    return CliRunner().invoke(app, ["validate", str(JOBS / job), *args], env={"COLUMNS": "200"})


@pytest.mark.parametrize(
    ("settings", "path", "reason"),
    [
        (
            ["scaling.strategy=fsdp", "scaling.fsdp.shard=[Lineer]"],
            "scaling.fsdp.shard",
            "did you mean 'Linear'",
        ),
        (["checkpoint.async_save=true"], "checkpoint.async_save", "scaling.strategy: fsdp"),
        (["scaling.fsdp.cpu_offload=true"], "scaling.fsdp", "strategy: fsdp"),
        (
            ["scaling.strategy=fsdp", "scaling.fsdp.cpu_offload=true"],
            "scaling.fsdp.cpu_offload",
            "use_gpu",
        ),
        (
            ["scaling.strategy=fsdp", "scaling.use_gpu=true", "scaling.mixed_precision=fp16"],
            "scaling.mixed_precision",
            "bf16",
        ),
    ],
)
def test_a_combination_fsdp_cannot_run_exits_2_naming_the_field(
    settings, path, reason, deeprig_home
):
    result = _validate(*settings)
    assert result.exit_code == 2, result.output
    assert f"{path}:" in result.output and reason in result.output, result.output


def test_fsdp_refuses_a_users_own_loop(deeprig_home):
    result = _validate("scaling.strategy=fsdp", job="custom_loop.yaml")
    assert result.exit_code == 2, result.output
    assert "scaling.strategy:" in result.output and "your loop" in result.output


def test_fsdp_with_named_units_validates_and_one_worker_is_said_to_train_whole(deeprig_home):
    named = _validate("scaling.strategy=fsdp", "scaling.fsdp.shard=[Linear]")
    assert named.exit_code == 0, named.output
    one = _validate("scaling.strategy=fsdp", "scaling.num_workers=1")
    assert one.exit_code == 0, one.output
    assert "nothing to shard" in one.output


def test_n_heads_not_dividing_d_model_exits_2_naming_both(deeprig_home):
    result = _validate("model.n_heads=3", job="stdlib_transformer.yaml")
    assert result.exit_code == 2, result.output
    assert "n_heads (3) must divide d_model (128)" in result.output, result.output
    assert "model.n_heads" in result.output, result.output


def test_a_language_model_on_a_non_causal_transformer_exits_2(deeprig_home, tmp_path):
    corpus = tmp_path / "corpus.csv"
    lines = [f'"def add_{i}(x):\n    return x + {i}\n"' for i in range(200)]
    corpus.write_text("text\n" + "\n".join(lines) + "\n")
    fsdp = ("scaling.strategy=fsdp", "scaling.num_workers=2")
    settings = (f"data.path={corpus}", *fsdp)
    result = _validate("model.causal=false", *settings, job="stdlib_transformer.yaml")
    assert result.exit_code == 2, result.output
    assert "model.causal:" in result.output and "causal: true" in result.output, result.output
    assert _validate(*settings, job="stdlib_transformer.yaml").exit_code == 0


def test_pbt_over_a_two_worker_fsdp_base_exits_2_and_asha_validates(deeprig_home):
    fsdp = ("base.scaling.strategy=fsdp", "base.scaling.num_workers=2")
    pbt = _validate(*fsdp, job="tune_digits_mlp_pbt.yaml")
    assert pbt.exit_code == 2, pbt.output
    assert "scheduler.name: pbt needs base.scaling.num_workers: 1" in pbt.output, pbt.output
    asha = _validate(*fsdp, "scheduler={name: asha}", job="tune_digits_mlp_pbt.yaml")
    assert asha.exit_code == 0, asha.output


def test_resume_from_a_checkpoint_of_another_model_shape_names_the_changed_field(
    sharded_runs, monkeypatch
):
    from deeprig.data.info import DataInfo
    from deeprig.runners import resume_check

    saved = sharded_runs["folder"] / "merged"  # SPEC's MLP: 6 inputs, hidden [64, 32], 3 classes
    monkeypatch.setattr(
        resume_check, "_latest_checkpoint", lambda _: (str(saved), TrainState.load(saved))
    )
    data = DataInfo(input_shape=(6,), task="classification", num_outputs=3, num_rows=80, num_val=8)

    def problems(spec: TrainSpec, info: DataInfo = data):
        return resume_check.resumed_checkpoint_problems(spec, info, "unused")

    assert problems(SPEC) == []
    (wider,) = problems(
        SPEC.model_copy(update={"model": MLP.model_copy(update={"hidden": [64, 16]})})
    )
    assert wider.path == "model.hidden"
    assert str(saved) in wider.message and "set it back to [64, 32]" in wider.message
    assert "its net.3.bias is (32,), this spec's (16,)" in wider.message
    (other_data,) = problems(SPEC, DataInfo((8,), "classification", 3, 80, 8))
    assert other_data.path == "data" and "(6,)" in other_data.message


GPU_CHECK = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def _gpu_check(*args: str):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, str(GPU_CHECK), *args], capture_output=True, text=True, timeout=600
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_the_gpu_check_skips_cleanly_without_a_gpu():
    done = _gpu_check()
    assert done.returncode == 0, done.stderr
    assert "no CUDA GPU" in done.stdout


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_gpu_check_trains_ddp_and_fsdp_in_bf16():
    done = _gpu_check("--quick")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[2:]}
    assert {"ddp", "fsdp"} <= rows.keys(), done.stdout
