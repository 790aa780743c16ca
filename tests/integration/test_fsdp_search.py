"""A search over an fsdp base on a real local Ray: its trial a 2-worker TorchTrainer whose
model is sharded, its checkpoints every rank's DCP shards, the best trial's model logged
whole on the search's parent run. One trial (~14 s each here): which trial is the best is
the same for every base, checked by test_tune_job.py's searches; what is fsdp's own is the
sharded checkpoint gathered whole. (PBT over a multi-worker base is refused before Ray
starts: tests/unit/test_sharding.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from deeprig.cli import app
from deeprig.training.state import TrainState
from typer.testing import CliRunner

from tests.conftest import deeprig_home_at, embedded_store_client, runs_in

pytestmark = [pytest.mark.usefixtures("ray_2_cpus"), pytest.mark.timeout(300)]

SEARCH = {
    "name": "fsdp-search",
    "kind": "tune",
    "base": {
        "name": "fsdp-trial",
        "kind": "train",
        "seed": 0,
        "model": {"name": "mlp", "hidden": [128, 64]},
        "data": {"source": "builtin:digits", "val_fraction": 0.2},
        "optim": {"name": "adamw", "lr": 0.003, "batch_size": 64, "num_epochs": 2},
        "scaling": {"num_workers": 2, "strategy": "fsdp"},
        "checkpoint": {"num_to_keep": 1, "metric": "epoch", "mode": "max"},
    },
    "search_space": {"optim.lr": {"choice": [0.001, 0.01]}},
    "search": {"algorithm": "random", "metric": "val_accuracy", "mode": "max", "num_samples": 1},
    "scheduler": {"name": "fifo"},
    "tracking": {"experiment": "fsdp-search"},
}


@pytest.fixture(scope="module")
def fsdp_search(tmp_path_factory):
    """One trial of 2 epochs: (client, parent run, child runs, the deeprig home)."""
    folder = tmp_path_factory.mktemp("fsdp-search")
    job = folder / "search.yaml"
    job.write_text(yaml.safe_dump(SEARCH))
    home = folder / "deeprig-home"
    with deeprig_home_at(home):
        result = CliRunner().invoke(app, ["run", str(job)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    client = embedded_store_client(home)
    (parent,) = runs_in(client, "fsdp-search", kind="tune")
    children = runs_in(client, "fsdp-search", kind="train")
    return client, parent, children, home


def _trial_checkpoints(home: Path, trial_id: str) -> list[Path]:
    trial = (home / "checkpoints" / "tune").glob(f"*/train/trial-{trial_id}/checkpoint_*")
    return sorted(p for p in trial if p.is_dir())  # (not Train's checkpoint_manager_snapshot)


def test_each_fsdp_trial_trains_sharded_and_checkpoints_every_ranks_shards(fsdp_search):
    client, parent, children, home = fsdp_search
    assert parent.info.status == "FINISHED"
    assert len(children) == 1 and {c.info.status for c in children} == {"FINISHED"}
    for child in children:
        (checkpoint,) = _trial_checkpoints(home, child.data.tags["deeprig.trial_id"])
        files = {p.name for p in (checkpoint / "shards").iterdir()}
        assert files == {".metadata", "__0_0.distcp", "__1_0.distcp"}, checkpoint
        assert TrainState.load(checkpoint).sharded
        assert child.data.params["scaling.strategy"] == "fsdp"


def test_the_best_fsdp_trials_model_is_logged_whole_on_the_parent(fsdp_search):
    import mlflow
    import numpy as np
    from deeprig.runners.train_record import servable_model

    client, parent, children, home = fsdp_search
    best_id = parent.data.tags["deeprig.best_trial_id"]
    (checkpoint,) = _trial_checkpoints(home, best_id)
    mlflow.set_tracking_uri(client.tracking_uri)
    logged = mlflow.pytorch.load_model(f"runs:/{parent.info.run_id}/model")
    state = TrainState.load(checkpoint).whole()
    expected, _, _ = servable_model(state)
    sample = torch.from_numpy(np.random.default_rng(0).random((4, *state.input_shape), np.float32))
    with torch.no_grad():
        torch.testing.assert_close(logged(sample), expected.eval()(sample))
