"""Where the training loop runs: what it asks of its surroundings, and the two answers.

- `RayTrainSession`: a Ray Train worker (one of N DDP or FSDP ranks under a TorchTrainer).
- `TuneTrialSession`: inside a Ray Tune trial itself, for a single-worker base spec. A
  search of small models then costs no worker group per trial (its start-up is ~8 s on
  2 CPUs, longer than many trials), and reports carry checkpoints straight to Tune,
  which PBT needs to copy weights between trials.
"""

from __future__ import annotations

import tempfile
from typing import Any, Protocol

import torch
from torch import nn

from deeprig.training.state import TrainState


def restored_state(checkpoint: Any) -> TrainState:
    """The TrainState in a Ray checkpoint. A sharded state reads its shard files later
    (`load_into`, once the model is sharded), so they must outlive this call: on local or
    mounted storage they are read where they lie; from remote storage (s3://, gs://),
    where `as_directory` would give a download removed on leaving it, they are downloaded
    to a folder of their own that lasts as long as the worker."""
    import pyarrow.fs as pafs

    if isinstance(checkpoint.filesystem, pafs.LocalFileSystem):
        return TrainState.load(checkpoint.path)
    return TrainState.load(checkpoint.to_directory(tempfile.mkdtemp(prefix="deeprig-restored-")))


class WorkerSession(Protocol):
    rank: int
    world_size: int

    def device(self) -> torch.device: ...
    def prepare_model(self, model: nn.Module) -> nn.Module: ...
    def dataset(self, name: str): ...
    def restore(self) -> TrainState | None: ...
    def report(self, metrics: dict[str, float], state: TrainState | None) -> None: ...
    def report_step_checkpoint(
        self, metrics: dict[str, float], state: TrainState | None
    ) -> None: ...
    def preemption_notice(self) -> bool: ...


class RayTrainSession:
    def __init__(self, background_checkpoints: bool = False):
        import ray.train

        # checkpoint.async_save: a sharded state's files written while training goes on
        self._background = background_checkpoints

        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()

    def device(self) -> torch.device:
        import ray.train.torch

        return ray.train.torch.get_device()

    def prepare_model(self, model: nn.Module) -> nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)  # moves it; wraps in DDP when world > 1

    def dataset(self, name: str):
        import ray.train

        return ray.train.get_dataset_shard(name)

    def preemption_notice(self) -> bool:
        """A node of the worker group is being drained (a spot notice, `ray drain-node`),
        the same answer on every rank: Ray Train's notice is a barrier, rank 0's read."""
        import ray.train

        return ray.train.get_preemption_info() is not None

    def restore(self) -> TrainState | None:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        return None if checkpoint is None else restored_state(checkpoint)

    def report(self, metrics: dict[str, float], state: TrainState | None) -> None:
        """Every rank reports (it is a barrier); rank 0 alone writes the checkpoint, or,
        sharded, every rank its own folder of it (Ray Train merges them into one)."""
        import ray.train

        if state is None or (self.rank != 0 and not state.sharded):
            ray.train.report(metrics)
            return
        if state.sharded and self._background:
            self._report_in_background(metrics, state)
            return
        with tempfile.TemporaryDirectory() as directory:
            state.save(directory, self.rank)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))

    def _report_in_background(self, metrics: dict[str, float], state: TrainState) -> None:
        """The shards are copied to memory and written by a thread; Ray Train's own
        background upload waits for them, then persists the folder and reports."""
        import ray.train
        from ray.train import CheckpointUploadMode

        directory = tempfile.mkdtemp(prefix="deeprig-shards-")
        written = state.save(directory, self.rank, background=True)
        storage = ray.train.get_context().get_storage()

        def upload(checkpoint: ray.train.Checkpoint, name: str) -> ray.train.Checkpoint:
            if written is not None:
                written.result()
            return storage.persist_current_checkpoint(checkpoint, name)

        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(directory),
            checkpoint_upload_mode=CheckpointUploadMode.ASYNC,
            delete_local_checkpoint_after_upload=True,
            checkpoint_upload_fn=upload,
        )

    def report_step_checkpoint(self, metrics: dict[str, float], state: TrainState | None) -> None:
        """A checkpoint inside an epoch (rank 0's state; None on the other ranks): a
        report like any other to Ray Train (the controller's epoch logger passes over it:
        it carries no `epoch`)."""
        self.report(metrics, state)


class TuneTrialSession:
    rank = 0
    world_size = 1

    def __init__(self, datasets: dict[str, Any], use_gpu: bool):
        self._datasets = datasets
        self._device = torch.device("cuda:0" if use_gpu else "cpu")

    def device(self) -> torch.device:
        return self._device

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return model.to(self._device)

    def dataset(self, name: str):
        return self._datasets[name].iterator()

    def preemption_notice(self) -> bool:
        return False  # (Tune restarts a trial whose node goes; it has no notice to read)

    def restore(self) -> TrainState | None:
        import ray.tune

        checkpoint = ray.tune.get_checkpoint()
        return None if checkpoint is None else restored_state(checkpoint)

    def report_step_checkpoint(self, metrics: dict[str, float], state: TrainState | None) -> None:
        # Never called: a Tune scheduler counts every report as an iteration, so a search
        # refuses checkpoint.every_n_steps in its base before it starts.
        raise NotImplementedError("a search trial checkpoints once an epoch")

    def report(self, metrics: dict[str, float], state: TrainState | None) -> None:
        import ray.tune

        if state is None:
            ray.tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as directory:
            state.save(directory)
            ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(directory))
