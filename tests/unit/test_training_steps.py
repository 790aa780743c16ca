"""One epoch's steps without Ray: gradient accumulation equals one big batch, a resume
inside an epoch sees the rest of the same batches, the checkpoint schema round-trips."""

from __future__ import annotations

import copy

import pytest
import torch
from deeprig.data.shard import ShardBatches
from deeprig.training.checkpointer import reseed
from deeprig.training.epoch import Position, StepParts, train_epoch
from deeprig.training.guards import NonFiniteLoss
from deeprig.training.state import TrainState
from torch import nn


class TableShard:
    """A worker's shard as far as ShardBatches reads it: batches of a tensor table."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def iter_torch_batches(self, batch_size: int, **_: object):
        for start in range(0, len(self.y), batch_size):
            yield {"x": self.x[start : start + batch_size], "y": self.y[start : start + batch_size]}


def _shard(rows: int, batch_size: int) -> ShardBatches:
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(rows, 6, generator=gen), torch.randint(0, 3, (rows,), generator=gen)
    return ShardBatches(
        TableShard(x, y), batch_size, torch.device("cpu"), torch.long, True, seed=11
    )


def _parts(model: nn.Module, accumulate: int) -> StepParts:
    return StepParts(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.0),
        scaler=torch.amp.GradScaler("cuda", enabled=False),
        loss_fn=nn.CrossEntropyLoss(reduction="sum"),
        classification=True,
        autocast_dtype=None,
        accumulate_steps=accumulate,
        grad_clip_norm=None,
        world_size=1,
    )


def _trained(rows: int, batch_size: int, accumulate: int) -> tuple[nn.Module, Position]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    position = Position(epoch=0)
    train_epoch(_parts(model, accumulate), _shard(rows, batch_size), position, lambda *_: None)
    return model, position


@pytest.mark.parametrize("rows", [32, 40])  # 40: the epoch ends on a partial group
def test_accumulated_micro_batches_step_like_one_big_batch(rows):
    accumulated, position = _trained(rows, batch_size=8, accumulate=4)
    big, big_position = _trained(rows, batch_size=32, accumulate=1)
    assert position.global_step == big_position.global_step == -(-rows // 32)
    assert position.batches_done == -(-rows // 8)
    for a, b in zip(accumulated.parameters(), big.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_without_accumulation_small_batches_step_differently():
    # The comparison above can fail: four separate steps of 8 are not one step of 32.
    small, _ = _trained(32, batch_size=8, accumulate=1)
    big, _ = _trained(32, batch_size=32, accumulate=1)
    assert not torch.allclose(small[0].weight, big[0].weight, atol=1e-4)


def test_the_step_callback_sees_every_optimiser_step_with_its_loss():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3))
    seen: list[tuple[int, int, float]] = []

    def after_step(position: Position, loss: torch.Tensor) -> None:
        seen.append((position.global_step, position.steps_in_epoch, float(loss)))

    train_epoch(_parts(model, 2), _shard(48, 8), Position(0, global_step=10), after_step)
    assert [s[:2] for s in seen] == [(11, 1), (12, 2), (13, 3)]
    assert all(loss > 0 for *_, loss in seen)


def test_a_resume_inside_an_epoch_gets_the_rest_of_the_same_batches():
    shard = _shard(50, 8)
    whole = [y.tolist() for _, y in shard.epoch(4, shuffle=True)]
    rest = [y.tolist() for _, y in shard.epoch(4, shuffle=True, skip_batches=3)]
    assert rest == whole[3:]
    assert shard.num_batches() == len(whole) == 7
    other_epoch = [y.tolist() for _, y in shard.epoch(5, shuffle=True)]
    assert other_epoch != whole


def _checkpoint_at_step_3(position: Position, loss: torch.Tensor) -> None:
    if position.global_step == 3:
        reseed(0, 0, position)  # what a mid-epoch checkpoint does once it has saved


def test_an_interrupted_epoch_resumed_ends_with_the_same_weights():
    # Train 7 batches straight (a checkpoint after the third); then the same 3, save,
    # restore a copy and train the other 4. Dropout makes the randomness matter.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.3), nn.Linear(16, 3))
    start = copy.deepcopy(model.state_dict())
    reseed(0, 0, Position(0))
    train_epoch(_parts(model, 1), _shard(56, 8), Position(0), _checkpoint_at_step_3)

    interrupted = nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.3), nn.Linear(16, 3))
    interrupted.load_state_dict(start)
    parts = _parts(interrupted, 1)
    saved: dict = {}

    def stop_after_three(position: Position, loss: torch.Tensor) -> None:
        if position.global_step == 3:
            saved.update(
                weights=copy.deepcopy(interrupted.state_dict()),
                optim=copy.deepcopy(parts.optimizer.state_dict()),
            )
            raise KeyboardInterrupt  # the worker dies

    reseed(0, 0, Position(0))
    with pytest.raises(KeyboardInterrupt):
        train_epoch(parts, _shard(56, 8), Position(0), stop_after_three)
    resumed = nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.3), nn.Linear(16, 3))
    resumed.load_state_dict(saved["weights"])
    resumed_parts = _parts(resumed, 1)
    resumed_parts.optimizer.load_state_dict(saved["optim"])
    position = Position(0, batches_done=3, global_step=3, steps_in_epoch=3)
    reseed(0, 0, position)
    train_epoch(resumed_parts, _shard(56, 8), position, lambda *_: None)
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_nan_loss_names_the_epoch_and_step():
    model = nn.Sequential(nn.Linear(6, 3))
    with torch.no_grad():
        model[0].weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLoss, match="epoch 3, step 1"):
        train_epoch(_parts(model, 1), _shard(16, 8), Position(2), lambda *_: None)


def test_a_mid_epoch_state_round_trips_and_an_old_one_still_loads(tmp_path):
    state = TrainState(
        model={"w": torch.ones(2)},
        optimizer={},
        scheduler={},
        scaler={},
        epoch=4,
        metrics={"val_loss": 0.5},
        spec={},
        input_shape=(8, 8),
        num_outputs=10,
        task="classification",
        run_id="r",
        batches_done=12,
        epoch_totals=(3.5, 96.0),
        global_step=60,
        early_stop_best=0.4,
        early_stop_stale=1,
    )
    state.save(tmp_path)
    loaded = TrainState.load(tmp_path)
    assert loaded.mid_epoch and loaded.next_epoch == 4
    assert loaded.epoch_totals == (3.5, 96.0) and loaded.global_step == 60
    assert (loaded.early_stop_best, loaded.early_stop_stale) == (0.4, 1)
    # A checkpoint written before these fields existed: an epoch's end, resumed after it.
    old = {k: v for k, v in torch.load(tmp_path / "checkpoint.pt", weights_only=False).items()}
    for key in ("batches_done", "epoch_totals", "global_step", "early_stop_best"):
        old.pop(key)
    torch.save(old, tmp_path / "checkpoint.pt")
    legacy = TrainState.load(tmp_path)
    assert not legacy.mid_epoch and legacy.next_epoch == 5


def test_the_divergence_error_survives_the_trip_to_rays_controller():
    # Ray ships each rank's exception by pickle; an exception rebuilt from its message
    # alone would fail to unpickle and hide the divergence behind a TypeError.
    import pickle

    again = pickle.loads(pickle.dumps(NonFiniteLoss(0, 4)))
    assert isinstance(again, NonFiniteLoss)
    assert (again.epoch, again.step) == (0, 4)
    assert again.where == "epoch 1, step 5" and "optim.lr" in str(again)
