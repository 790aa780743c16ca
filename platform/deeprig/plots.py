"""The figures a run records, drawn from plain numbers: a train job's learning curve and
confusion matrices, a search's trials. Pure: no MLflow, no Ray; each function returns a
matplotlib `Figure` built without pyplot (no global figure registry to close, no backend to
choose), which the caller hands to `RunRecorder.log_figure`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Points = Sequence[tuple[int, float]]  # (step, value), a metric's history


def learning_curve(
    curves: Mapping[str, Points],
    loss_keys: Sequence[str],
    score_key: str | None,
    title: str,
    best_epoch: int | None = None,
) -> Figure:
    """Losses (log scale when all positive), the score, and the learning rate (`lr`) when
    it changes, by epoch (`curves`' steps count epochs from 0); epochs as integer ticks;
    the best epoch marked on every panel."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    lr_values = {v for _, v in curves.get("lr", [])}
    panels = [("loss", [k for k in loss_keys if curves.get(k)], True)]
    if score_key and curves.get(score_key):
        panels.append((score_key, [score_key], False))
    if len(lr_values) > 1:
        panels.append(("learning rate", ["lr"], False))
    fig = Figure(figsize=(4.6 * len(panels), 3.6))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (label, keys, log_scale) in zip(axes[0], panels, strict=True):
        for key in keys:
            points = curves[key]
            ax.plot([s + 1 for s, _ in points], [v for _, v in points], marker=".", label=key)
        if log_scale and all(v > 0 for k in keys for _, v in curves[k]):
            ax.set_yscale("log")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="tab:red", linestyle="--", linewidth=1, alpha=0.7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="epoch", ylabel=label, title=label)
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend()
    if best_epoch is not None:
        axes[0][0].plot([], [], color="tab:red", linestyle="--", label=f"best (epoch {best_epoch})")
        axes[0][0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_matrix(matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str) -> Figure:
    """Counts in every cell (up to 20 classes), rows the true class, shaded by each row's
    share (a rare class reads as clearly as a common one)."""
    import numpy as np
    from matplotlib.figure import Figure

    counts = np.asarray(matrix)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = min(2.2 + 0.6 * len(classes), 12.0)
    fig = Figure(figsize=(size + 1.2, size))
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    ticks = range(len(classes))
    ax.set_xticks(ticks, classes, rotation=45, ha="right")
    ax.set_yticks(ticks, classes)
    if len(classes) <= 20:
        for (row, col), count in np.ndenumerate(counts):
            colour = "white" if shares[row, col] > 0.5 else "black"
            ax.text(col, row, str(count), ha="center", va="center", color=colour, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    fig.tight_layout()
    return fig


def search_trials(
    frames: Mapping[str, Any],
    metric: str,
    best_trial: Any,
    best_label: str,
    unit: str,
    stopped: set[str],
    name: str,
) -> Figure:
    """Every trial's `metric` by its `training_iteration` (`frames`: trial id -> its
    results as a DataFrame), the best one bold and named `best_label`, and a cross where
    the scheduler stopped a trial early."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for trial_id, frame in frames.items():
        if metric not in frame:
            continue
        is_best = trial_id == best_trial
        ax.plot(
            frame["training_iteration"],
            frame[metric],
            marker=".",
            linewidth=2.5 if is_best else 1,
            alpha=1 if is_best else 0.5,
            label=f"{best_label} (best)" if is_best else None,
        )
        if trial_id in stopped and len(frame):
            ax.plot(frame["training_iteration"].iloc[-1], frame[metric].iloc[-1], "x", color="grey")
    if stopped:
        ax.plot([], [], "x", color="grey", label="stopped early")
    x_label = unit.rstrip("s")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel=x_label, ylabel=metric, title=f"{name}: {metric} by {x_label}, all trials")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig
