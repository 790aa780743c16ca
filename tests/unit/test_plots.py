"""The figures a run records, drawn from plain numbers without MLflow."""

from __future__ import annotations

import io

from deeprig import plots


def test_a_learning_curve_has_a_panel_for_losses_the_score_and_a_changing_lr():
    curves = {
        "train_loss": [(0, 1.0), (1, 0.5), (2, 0.4)],
        "val_loss": [(0, 1.1), (1, 0.6), (2, 0.7)],
        "val_accuracy": [(0, 0.5), (1, 0.8), (2, 0.79)],
        "lr": [(0, 0.1), (1, 0.05), (2, 0.01)],
    }
    figure = plots.learning_curve(
        curves, ("train_loss", "val_loss"), "val_accuracy", "digits", best_epoch=2
    )
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["loss", "val_accuracy", "learning rate"]
    assert figure.axes[0].get_yscale() == "log"
    # epochs counted from 1 on the x axis; the best epoch marked on every panel
    assert list(figure.axes[0].lines[0].get_xdata()) == [1, 2, 3]
    assert all(any(list(line.get_xdata()) == [2, 2] for line in ax.lines) for ax in figure.axes)
    png = io.BytesIO()
    figure.savefig(png, format="png")
    assert png.getvalue().startswith(b"\x89PNG")


def test_a_constant_lr_and_a_missing_score_draw_the_losses_alone():
    curves = {"train_loss": [(0, 1.0)], "lr": [(0, 0.1), (1, 0.1)]}
    figure = plots.learning_curve(curves, ("train_loss", "val_loss"), None, "t")
    assert [ax.get_title() for ax in figure.axes] == ["loss"]


def test_a_confusion_matrix_writes_every_count_shaded_by_its_rows_share():
    figure = plots.confusion_matrix([[8, 2], [0, 5]], ["cat", "dog"], "validation")
    ax = figure.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["0", "2", "5", "8"]
    shares = ax.images[0].get_array()
    assert shares[0][0] == 0.8 and shares[1][1] == 1.0
