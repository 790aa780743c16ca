"""The one checkpoint schema of a train job (`TrainState`) and its file.

Every reader — a restarted worker, a resumed search trial, the driver logging the best
model — goes through `TrainState`: no reader picks keys out of a dict by string.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

CHECKPOINT_FILE = "checkpoint.pt"


@dataclass(frozen=True)
class TrainState:
    """What one checkpoint holds: enough to resume training where it stopped, and to
    rebuild the model without the job's data (nanoGPT's habit: the checkpoint carries the
    model's arguments)."""

    # state_dict of the model (unwrapped from DDP) and of the optimizer; a sharded state
    # (`sharded`) holds this rank's shards while it is saved, nothing once read.
    model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any]
    epoch: int  # the epoch this state ends (or is inside, see batches_done), from 0
    metrics: dict[str, float]  # what the last finished epoch reported
    spec: dict[str, Any]  # the TrainSpec that trained it, as JSON
    input_shape: tuple[int, ...]  # one sample's shape, as the model reads it
    num_outputs: int
    task: str  # "classification" | "regression"
    run_id: str | None  # the MLflow run that trained it
    # A checkpoint inside an epoch (checkpoint.every_n_steps): batches of `epoch` already
    # trained on this rank, and that epoch's running (loss sum, rows). 0: the epoch ended.
    batches_done: int = 0
    epoch_totals: tuple[float, float] = (0.0, 0.0)
    global_step: int = 0  # optimiser steps since the job began
    # Early stopping's patience, so a restart neither forgets the best nor waits again.
    early_stop_best: float | None = None
    early_stop_stale: int = 0
    input_dtype: str = "float32"  # "int64": token ids (text)
    vocab_size: int | None = None
    classes: tuple[str, ...] | None = None  # class names in id order, where labels had names
    fitted: dict[str, Any] | None = None  # data.info.Fitted as a dict: the preprocessing
    # The validation split's confusion matrix at this epoch (rows: true class), summed
    # over every rank; classification only.
    confusion_matrix: list[list[int]] | None = None
    # Sharded (scaling.strategy: fsdp): the model and optimizer are DCP files beside the
    # checkpoint file, one per rank that wrote them (training/shards.py); `shards` is the
    # folder they were read from (set by `load`, never saved).
    sharded: bool = False
    shards: str | None = None

    @property
    def mid_epoch(self) -> bool:
        return self.batches_done > 0

    @property
    def next_epoch(self) -> int:
        """The epoch training continues in (the same one when it stopped inside it)."""
        return self.epoch if self.mid_epoch else self.epoch + 1

    def save(self, directory: str | Path, rank: int = 0, background: bool = False):
        """Write the checkpoint into `directory`: rank 0 writes the file; a sharded state's
        every rank also writes its shards (`background`: returns the future that ends when
        they are written, training/shards.py)."""
        written = None
        saved = self
        if self.sharded:
            from deeprig.training.shards import save_shards

            written = save_shards(self.model, self.optimizer, directory, background)
            # (before asdict, which would deep-copy every shard)
            saved = dataclasses.replace(self, model={}, optimizer={})
        fields = dataclasses.asdict(saved)
        if rank == 0:
            torch.save(fields | {"shards": None}, Path(directory) / CHECKPOINT_FILE)
        return written

    @classmethod
    def load(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> TrainState:
        """The checkpoint in `directory`. A sharded one's tensors stay in their files:
        `load_into` reads them into a model of any sharding, `whole` into one model here."""
        # weights_only=False: the file holds the spec and plain Python values, written by us.
        saved = torch.load(
            Path(directory) / CHECKPOINT_FILE, map_location=map_location, weights_only=False
        )
        if "data" in saved:  # written before the schema was a dataclass
            saved |= saved.pop("data")
        saved["input_shape"] = tuple(saved["input_shape"])
        saved["epoch_totals"] = tuple(saved.get("epoch_totals", (0.0, 0.0)))
        if saved.get("classes") is not None:
            saved["classes"] = tuple(saved["classes"])
        if saved.get("sharded"):
            saved["shards"] = str(directory)
        return cls(**saved)

    def load_into(self, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        """The saved weights (and optimizer state) into `model` and `optimizer`. A whole
        state loads before the model is sharded or wrapped, a sharded one after."""
        if self.sharded:
            from deeprig.training.shards import load_shards

            assert self.shards is not None  # (set by `load`)
            load_shards(self.shards, model, optimizer)
            return
        model.load_state_dict(self.model)
        if optimizer is not None:
            optimizer.load_state_dict(self.optimizer)

    def whole(self) -> TrainState:
        """This state with the whole model in memory (a sharded one read from its files on
        one process; its optimizer state is left behind): for a reader that outlives the
        checkpoint's folder, like the driver logging the model."""
        if not self.sharded:
            return self
        model = self._built_model()
        self.load_into(model, None)
        return dataclasses.replace(
            self, model=model.state_dict(), optimizer={}, sharded=False, shards=None
        )

    def preprocessing(self):
        """The `Fitted` preprocessing this model was trained behind."""
        from deeprig.data.info import Fitted

        fields = dict(self.fitted or {})
        for key in ("input_mean", "input_std", "stats_shape", "target_mean", "target_std"):
            if fields.get(key) is not None:
                # (a checkpoint made before forecasts had several steps holds one number)
                value = fields[key]
                fields[key] = tuple(value) if isinstance(value, list | tuple) else (value,)
        fields["baseline"] = tuple(tuple(pair) for pair in fields.get("baseline", ()))
        return Fitted(**fields)

    def rebuild_model(self) -> nn.Module:
        """The trained network, weights loaded, built from the spec it was trained with."""
        model = self._built_model()
        self.load_into(model, None)
        return model

    def _built_model(self) -> nn.Module:
        from deeprig.models import build_model
        from deeprig.spec.train import TrainSpec

        spec = TrainSpec.model_validate(self.spec)
        assert spec.model is not None  # (deeprig's loop wrote this state: it had a model)
        return build_model(spec.model, self.input_shape, self.num_outputs, self.vocab_size)
