"""What the live progress prints: at 80 columns the epoch and time left come first; off a
terminal, one plain line per epoch."""

from __future__ import annotations

import io

from deeprig.progress import EpochProgress, epoch_rows
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


def test_off_a_terminal_epochs_that_ended_between_two_polls_each_get_their_line():
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=80)
    rows = [{"epoch": e, "val_loss": 1.0 / e} for e in range(1, 8)]
    polls = iter([rows[6], rows[6]])  # epochs 1-7 ended before the first poll
    progress = EpochProgress(console, 15, lambda: next(polls), ("val_loss",), history=lambda: rows)
    progress._refresh()
    progress._refresh()
    lines = out.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == [f"{e}/15" for e in range(1, 8)]
    assert "val_loss 0.25" in lines[3]


def test_epoch_rows_are_each_epochs_metrics_from_the_runs_history():
    history = {
        "epoch": [(0, 1.0), (1, 2.0)],
        "val_loss": [(1, 0.5), (0, 0.9)],
        "train_loss": [(0, 1.2)],
    }
    rows = epoch_rows(lambda key: history.get(key, []), ("val_loss", "train_loss"))
    assert rows == [
        {"epoch": 1.0, "val_loss": 0.9, "train_loss": 1.2},
        {"epoch": 2.0, "val_loss": 0.5},
    ]


def test_the_time_left_is_known_from_the_first_epoch_on():
    console = Console(file=io.StringIO(), force_terminal=True, width=80)
    progress = EpochProgress(console, 15, dict, ("val_loss",))
    # epoch 1 says how long it took; from the second epoch seen on, the rate observed
    assert progress.seconds_left(1, {"epoch_time_s": 2.0}, now=100.0) == 28.0
    assert progress.seconds_left(7, {}, now=130.0) == 8 * 5.0  # 6 epochs in 30 s
    unknown_total = EpochProgress(console, None, dict, ())
    assert unknown_total.seconds_left(3, {"epoch_time_s": 1.0}, now=1.0) is None


def test_the_bar_shows_the_time_left_at_epoch_7_of_15():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=80)
    at_7 = {"epoch": 7, "epoch_time_s": 30.0}  # the first poll: no rate observed yet
    with EpochProgress(console, 15, lambda: at_7, ("val_loss",)) as bar:
        bar._refresh()
    assert "0:04:00 left" in out.getvalue()
