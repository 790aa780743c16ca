"""Where a run's wall time went (runners/stages.py) and the wind-down's warm-up."""

from __future__ import annotations

import subprocess
import sys
import time

from deeprig.runners.stages import STARTUP, StageClock, summary


def test_stages_add_up_to_start_up_and_the_epochs_come_from_their_own_record():
    clock = StageClock(started_at=time.time() - 5.0)
    assert 4.9 < clock.seconds["imports"] < 6.0  # before the clock: the process's imports
    with clock.stage("ray_start"):
        time.sleep(0.05)
    with clock.stage("ray_start"):  # a stage met twice counts both times
        time.sleep(0.05)
    fit_at = time.time()
    # epoch 1 ran 0.5 s and ended 2.5 s after fit(): the worker group took 2 s to start
    clock.training_window(fit_at, (fit_at + 2.5, 0.5), last_epoch_end=fit_at + 4.0)
    out = clock.finished()
    assert out["time.ray_start_s"] >= 0.1
    assert abs(out["time.workers_start_s"] - 2.0) < 1e-6
    assert abs(out["time.train_s"] - 2.0) < 1e-6
    named = sum(out.get(f"time.{name}_s", 0.0) for name in STARTUP)
    assert named <= out["time.startup_s"] < named + 0.05  # (and the moments between stages)
    # start-up, epochs and wind-down add up to the total the closing line says
    parts = out["time.startup_s"] + out["time.train_s"] + out["time.finalize_s"]
    assert abs(parts - out["time.total_s"]) < 1e-6
    assert out["time.first_epoch_at_s"] > out["time.startup_s"]
    assert out["time.total_s"] >= out["time.imports_s"]


def test_the_closing_line_names_each_stage_within_80_columns():
    line = summary(
        {
            "time.total_s": 30.0,
            "time.startup_s": 20.0,
            "time.ray_start_s": 3.0,
            "time.data_s": 0.5,
            "time.workers_start_s": 12.0,
            "time.train_s": 4.0,
            "time.finalize_s": 2.0,
        }
    )
    assert line == (
        "time (s): start-up 20.0 (Ray 3.0, data 0.5, workers 12.0), epochs 4.0, end 2.0"
    )
    stages = ("total", "startup", "ray_start", "data", "workers_start", "train", "finalize")
    slow = summary({f"time.{name}_s": 987.6 for name in stages})
    assert slow is not None and len(slow) <= 80 and "workers 988" in slow
    assert summary({}) is None  # a run without the clock's record shows no line


def test_the_warm_up_imports_what_logging_results_needs():
    modules = ("torch.export._trace", "matplotlib.pyplot", "mlflow.pytorch")
    probe = (
        "import sys; from deeprig.tracking.warm_up import warm_up_result_logging;"
        f"modules = {modules!r};"
        "assert not any(m in sys.modules for m in modules);"
        "warm_up_result_logging().join();"
        "print(all(m in sys.modules for m in modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.stdout.strip() == "True", done.stderr
