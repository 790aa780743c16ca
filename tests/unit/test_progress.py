"""What the live progress prints: at 80 columns the epoch and time left come first; off a
terminal, one plain line per epoch."""

from __future__ import annotations

import io

from deeprig.progress import EpochProgress
from rich.console import Console


def test_off_a_terminal_each_new_epoch_is_one_plain_line():
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=80)
    reports = iter(
        [{}, {"epoch": 1, "train_loss": 0.5}, {"epoch": 1}, {"epoch": 2, "val_loss": 0.25}]
    )
    progress = EpochProgress(
        console, 2, lambda: next(reports, {"epoch": 2}), ("train_loss", "val_loss")
    )
    for _ in range(4):
        progress._refresh()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("epoch 1/2  train_loss 0.5")
    assert lines[1].startswith("epoch 2/2") and "val_loss 0.25" in lines[1]


def test_metrics_that_do_not_fit_are_dropped_not_cut():
    console = Console(file=io.StringIO(), force_terminal=True, width=80)
    progress = EpochProgress(console, 15, dict, ("train_loss", "val_loss", "val_accuracy"))
    text = progress._metrics_text(
        {"train_loss": 0.06805, "val_loss": 0.07416, "val_accuracy": 0.9804}, 80 - 42
    )
    assert text == "train_loss 0.06805  val_loss 0.07416"


def test_a_long_epoch_shows_its_step_until_it_ends():
    in_epoch_3 = {"epoch": 2, "step/epoch": 3, "step/in_epoch": 120, "step/per_epoch": 400}
    assert EpochProgress.step_text(in_epoch_3) == "step 120/400"
    assert EpochProgress.step_text({**in_epoch_3, "epoch": 3}) == ""  # epoch 3 is done
    streaming = {"step/epoch": 1, "step/in_epoch": 7}
    assert EpochProgress.step_text(streaming) == "step 7"
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=80)
    progress = EpochProgress(console, 5, lambda: in_epoch_3, ("val_loss",))
    with progress:
        progress._refresh()
    assert "step 120/400" in out.getvalue()
