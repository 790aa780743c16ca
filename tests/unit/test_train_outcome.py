"""What a finished train job prints (deeprig.runners.train_outcome): the closing table of
the metrics it shows, in order, the time line, and where its MLflow run is."""

from __future__ import annotations

from deeprig.runners.train_outcome import TrainOutcome
from rich.console import Console

METRICS = {"val_accuracy": 0.9731, "epoch": 5.0, "train_loss": 0.08, "not_shown": 1.0}


def _printed(**fields) -> list[str]:
    console = Console(record=True, width=100)
    TrainOutcome(
        **{
            "job_name": "quickstart",
            "experiment": "quickstart",
            "run_id": "0123abcd",
            "metrics": METRICS,
            "checkpoint_path": "/tmp/ckpt/checkpoint_000004",
            "tracking_uri": "sqlite:///tmp/mlflow.db",
            "seconds": 12.34,
            **fields,
        }
    ).render(console)
    return [line.strip() for line in console.export_text().splitlines() if line.strip()]


def test_the_closing_table_shows_its_metrics_in_order_then_time_checkpoint_and_run():
    lines = _printed()
    rows = [line.split("│")[1].strip() for line in lines if line.count("│") == 3]
    assert rows == ["epoch", "train_loss", "val_accuracy"]  # (not_shown is not)
    assert any(line.startswith("│ val_accuracy") and "0.9731" in line for line in lines)
    assert "finished in 12.3 s" in lines
    assert "checkpoint: /tmp/ckpt/checkpoint_000004" in lines
    assert lines[-2:] == [
        "MLflow run 0123abcd (sqlite:///tmp/mlflow.db)",
        "see it: deeprig ui --run 0123abcd, or deeprig runs",
    ]


def test_a_run_with_a_page_in_mlflows_ui_is_named_by_it_and_no_run_names_none():
    assert _printed(run_url="http://127.0.0.1:5000/#/runs/0123abcd")[-1] == (
        "MLflow run 0123abcd: http://127.0.0.1:5000/#/runs/0123abcd"
    )
    assert not any("MLflow run" in line for line in _printed(run_id=None))
