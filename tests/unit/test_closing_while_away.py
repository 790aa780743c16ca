"""A search and an rl job whose tracking server is away at their end close from what the
driver holds (runners/tune/record.py, runners/rl.py's `record_end`): no read of the run,
the outcome from Tune's results and the trial runs the driver opened, every record kept
in the spool and delivered once the server answers."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
from deeprig.runners.tune.record import record_search
from deeprig.runners.tune.train_trial import TRAIN_BASE
from deeprig.spec import load_spec_text
from deeprig.tracking.runs import RunRecorder
from deeprig.tracking.spool import spooled_runs
from deeprig.tracking.store import TrackingTarget
from deeprig.tracking.tags import Tag

from tests.conftest import JOBS, free_port

PARENT = "a" * 32
TRIAL_RUNS = {"t1": "1" * 32, "t2": "2" * 32}


@pytest.fixture
def away(flaky_server, tmp_path, monkeypatch) -> RunRecorder:
    """A recorder onto a server that is down; its spool under tmp_path."""
    monkeypatch.setenv("DEEPRIG_HOME", str(tmp_path))
    monkeypatch.setattr("deeprig.tracking.outbox.RETRY_EVERY_S", 0.05)
    recorder = RunRecorder(TrackingTarget(f"http://127.0.0.1:{free_port()}", None), PARENT)
    recorder.client = flaky_server
    flaky_server.down = True
    return recorder


class Results(list):
    """Tune's ResultGrid, as record_search reads it: its results, the best, the table."""

    def get_best_result(self, metric, mode, scope):
        pick = max if mode == "max" else min
        return pick(self, key=lambda r: r.metrics_dataframe[metric].agg(mode))

    def get_dataframe(self, filter_metric=None, filter_mode=None):
        return pd.DataFrame(
            [r.metrics | {f"config/{k}": v for k, v in r.config.items()} for r in self]
        )


def trial(trial_id: str, accuracies: list[float], checkpoint_path: str):
    epochs = [
        {"epoch": e + 1, "training_iteration": e + 1, "val_accuracy": a}
        for e, a in enumerate(accuracies)
    ]
    last = epochs[-1] | {"trial_id": trial_id, "checkpoint_path": checkpoint_path}
    return SimpleNamespace(
        metrics=last,
        config={"optim.lr": 0.01},
        error=None,
        checkpoint=None,
        metrics_dataframe=pd.DataFrame(epochs),
    )


def test_a_search_closes_from_its_results_while_its_server_is_away(away, flaky_server, tmp_path):
    spec = load_spec_text(
        f"name: s\nkind: tune\nbase: {JOBS / 'digits_mlp.yaml'}\n"
        "search_space:\n  optim.lr: {loguniform: [0.001, 0.1]}\n"
        "search: {metric: val_accuracy, mode: max, num_samples: 2}\n",
        source=str(JOBS / "s.yaml"),
    )
    epochs = spec.base.optim.num_epochs
    best = tmp_path / "best"
    best.mkdir()
    (best / "state.pt").write_bytes(b"weights")
    results = Results(
        [
            trial("t1", [0.5] * epochs, str(tmp_path)),  # ran every epoch
            trial("t2", [0.6, 0.9], str(best)),  # the best, stopped early
        ]
    )
    outcome = record_search(spec, None, TRAIN_BASE, results, away, 0.0, TRIAL_RUNS)
    assert outcome.best_run_id == TRIAL_RUNS["t2"] and outcome.best_metric == 0.9
    assert outcome.num_stopped_early == 1 and "did not answer" in outcome.note
    assert spooled_runs()[PARENT] >= 8 and flaky_server.status == "RUNNING"

    flaky_server.down = False
    assert away.outbox.wait(timeout_s=10, until_down=False)
    assert flaky_server.tags[Tag.BEST_RUN_ID] == TRIAL_RUNS["t2"]
    assert flaky_server.tags[Tag.KEY_METRIC] == "best_val_accuracy"
    assert flaky_server.points["num_trials_stopped_early"][0][1] == 1
    assert {"trials.csv", "plots/search.png", "checkpoints/best/state.pt"} <= set(
        flaky_server.artifacts
    )
    assert flaky_server.status == "FINISHED"
    assert TRIAL_RUNS["t2"] in flaky_server.written_to  # (its deeprig.best_trial tag)


def test_an_rl_job_ends_its_run_without_reading_it(away, flaky_server, tmp_path):
    from deeprig.runners.rl import record_end

    record_end(away, tmp_path / "iteration_000004", 4, {"episode_return_mean": 180.0})
    assert spooled_runs() == {PARENT: 4} and flaky_server.status == "RUNNING"
    flaky_server.down = False
    assert away.outbox.wait(timeout_s=10, until_down=False)
    assert flaky_server.tags[Tag.ITERATIONS] == "4"
    assert flaky_server.tags[Tag.KEY_METRIC] == "last_episode_return_mean"
    assert flaky_server.points["last_episode_return_mean"][0][1] == 180.0
    assert flaky_server.status == "FINISHED" and spooled_runs() == {}
