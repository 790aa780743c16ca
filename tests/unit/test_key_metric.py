"""The one number that says how good a run is: the kept checkpoint's, named by a tag."""

from __future__ import annotations

from deeprig.tracking.key_metric import key_metric, label
from deeprig.tracking.tags import Tag

UNTAGGED = {"train": ("val_accuracy", "val_rmse", "val_loss")}


def test_the_tagged_metric_wins_over_the_last_epochs_value():
    metrics = {"val_accuracy": 0.75, "best_val_accuracy": 0.972}
    assert key_metric({Tag.KEY_METRIC: "best_val_accuracy"}, metrics, UNTAGGED) == (
        "best_val_accuracy",
        0.972,
    )


def test_a_run_recorded_before_the_tag_falls_back_to_its_likeliest_metric():
    assert key_metric({}, {"val_rmse": 54.26, "val_loss": 0.3}, UNTAGGED) == ("val_rmse", 54.26)
    old = {Tag.KEY_METRIC: "best_val_rmse"}
    assert key_metric(old, {"val_loss": 0.3}, UNTAGGED) == ("val_loss", 0.3)
    assert key_metric({}, {"lr": 0.1}, UNTAGGED) is None


def test_a_key_metric_is_labelled_with_where_its_value_comes_from():
    assert label("best_val_accuracy") == "best val_accuracy"
    assert label("last_episode_return_mean") == "last episode_return_mean"
    assert label("val_loss") == "val_loss"
