"""The tables and schemas the code relies on stay in step: kinds and runners, deeprig's
copies of MLflow's tag names, the one checkpoint schema."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from deeprig.runners import RUNNERS
from deeprig.spec.loader import SPEC_BY_KIND
from deeprig.spec.model import MLPConfig
from deeprig.spec.train import TrainSpec
from deeprig.tracking import tags
from deeprig.training.state import CHECKPOINT_FILE, TrainState


def test_every_kind_of_spec_has_a_runner():
    assert set(RUNNERS) == set(SPEC_BY_KIND)


def test_every_kind_resumes_after_its_driver_died():
    resumes = {kind: runner.resumes for kind, runner in RUNNERS.items()}
    # (a predict job is rerun whole: its output is written at the end)
    assert resumes == {"train": "train run", "tune": "search", "rl": "rl run", "predict": None}


def test_mlflow_tag_names_are_mlflows_own():
    from mlflow.utils import mlflow_tags

    assert tags.MLFLOW_PARENT_RUN_ID == mlflow_tags.MLFLOW_PARENT_RUN_ID
    assert tags.MLFLOW_GIT_COMMIT == mlflow_tags.MLFLOW_GIT_COMMIT


def test_deeprig_tag_names_are_unique_and_namespaced():
    names = [v for k, v in vars(tags.Tag).items() if k.isupper()]
    assert len(names) == len(set(names))
    assert all(name.startswith("deeprig.") for name in names)


def _state(model: torch.nn.Module) -> TrainState:
    spec = TrainSpec.model_validate(
        {
            "name": "t",
            "kind": "train",
            "model": {"name": "mlp"},
            "data": {"source": "builtin:digits"},
        }
    )
    return TrainState(
        model=model.state_dict(),
        optimizer={},
        scheduler={},
        scaler={},
        epoch=3,
        metrics={"val_loss": 0.5},
        spec=spec.model_dump(mode="json"),
        input_shape=(8, 8),
        num_outputs=10,
        task="classification",
        run_id="abc",
    )


def test_train_state_round_trips_and_rebuilds_its_model(tmp_path):
    from deeprig.models import build_model

    model = build_model(MLPConfig(name="mlp"), (8, 8), 10)
    state = _state(model)
    state.save(tmp_path)
    loaded = TrainState.load(tmp_path)
    assert (loaded.epoch, loaded.next_epoch, loaded.input_shape) == (3, 4, (8, 8))
    assert loaded.metrics == {"val_loss": 0.5}
    x = torch.randn(4, 8, 8)
    assert torch.equal(loaded.rebuild_model().eval()(x), model.eval()(x))


def test_train_state_reads_checkpoints_written_before_it_was_a_dataclass(tmp_path):
    from deeprig.models import build_model

    fields = dataclasses.asdict(_state(build_model(MLPConfig(name="mlp"), (8, 8), 10)))
    data = {k: fields.pop(k) for k in ("input_shape", "num_outputs", "task")}
    torch.save(fields | {"data": {**data, "input_shape": [8, 8]}}, tmp_path / CHECKPOINT_FILE)
    loaded = TrainState.load(tmp_path)
    assert (loaded.input_shape, loaded.num_outputs, loaded.task) == ((8, 8), 10, "classification")


def test_the_default_experiment_keeps_its_artifacts_under_the_home_folder(deeprig_home):
    from deeprig.tracking.store import embedded_target, prepare_store
    from mlflow import MlflowClient

    target = embedded_target(deeprig_home)
    assert not (deeprig_home / "mlflow.db").exists()  # resolving a store makes none
    prepare_store(target)
    location = MlflowClient(target.uri).get_experiment("0").artifact_location
    assert location.startswith((deeprig_home / "mlartifacts").as_uri())


def _sharded_checkpoint_at(folder) -> None:
    """A sharded state's checkpoint file in `folder`, beside a (stand-in) shard file."""
    from deeprig.training.state import CHECKPOINT_FILE

    _state(torch.nn.Linear(2, 2)).save(folder)
    saved = torch.load(folder / CHECKPOINT_FILE, weights_only=False)
    torch.save(saved | {"sharded": True, "model": {}}, folder / CHECKPOINT_FILE)
    (folder / "__0_0.distcp").write_bytes(b"shard of rank 0")


def test_a_remote_checkpoints_shards_outlive_the_restore(tmp_path):
    """From remote storage (here any pyarrow filesystem but the local one, as s3:// is), the
    shards are read after the restore returns (once the model is sharded): they are downloaded
    to a folder that stays, not to as_directory's, which is removed on leaving it."""
    import pyarrow.fs as pafs
    from deeprig.training.session import restored_state
    from ray.train import Checkpoint

    (tmp_path / "bucket" / "ckpt").mkdir(parents=True)
    _sharded_checkpoint_at(tmp_path / "bucket" / "ckpt")
    remote = pafs.SubTreeFileSystem(str(tmp_path / "bucket"), pafs.LocalFileSystem())
    state = restored_state(Checkpoint("ckpt", filesystem=remote))
    assert state.sharded and state.shards is not None
    assert not state.shards.startswith(str(tmp_path))  # a download, not the bucket
    assert (Path(state.shards) / "__0_0.distcp").read_bytes() == b"shard of rank 0"


def test_a_local_checkpoints_shards_are_read_where_they_lie(tmp_path):
    from deeprig.training.session import restored_state
    from ray.train import Checkpoint

    _sharded_checkpoint_at(tmp_path)
    assert restored_state(Checkpoint.from_directory(str(tmp_path))).shards == str(tmp_path)
