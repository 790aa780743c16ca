"""A sharded checkpoint's tensors (`scaling.strategy: fsdp`): the model's and the
optimizer's state written by every rank in parallel with torch.distributed.checkpoint
(DCP), and read back into a model of any sharding.

Each rank writes the shards it holds (`__<rank>_0.distcp`) into its own checkpoint folder,
rank 0 also the index (`.metadata`); Ray Train merges every rank's folder into the one
checkpoint. DCP's load reads, on each rank, the slices of every tensor that rank holds
now, whatever the number of ranks that wrote them: a checkpoint of N workers resumes on M.
The state dicts are keyed by parameter name (torch.distributed.checkpoint.state_dict), so
a whole model and a sharded one read the same files."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

SHARDS_DIR = "shards"  # inside a checkpoint folder, beside checkpoint.pt


def sharded_state_dicts(
    model: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model, optimizer) state as this rank holds it: DTensor shards under FSDP."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    return get_state_dict(model, optimizer)


def save_shards(
    model_state: dict[str, Any],
    optimizer_state: dict[str, Any],
    directory: str | Path,
    background: bool = False,
) -> Future | None:
    """Write this rank's shards into `directory`/shards (every rank calls it: DCP plans
    the files together). `background`: the tensors are copied to memory now and written by
    a thread; the returned future ends when the files are complete."""
    import torch.distributed.checkpoint as dcp

    state = {"model": model_state, "optimizer": optimizer_state}
    target = str(Path(directory) / SHARDS_DIR)
    if not background:
        with _one_process_quietly():
            dcp.save(state, checkpoint_id=target, no_dist=not dist.is_initialized())
        return None
    global _WRITING
    if _WRITING is not None:  # one background save at a time: their collectives never mix
        _WRITING.result()
    saved = dcp.async_save(state, checkpoint_id=target, process_group=_checkpoint_group())
    assert isinstance(saved, Future)
    _WRITING = saved
    return saved


_GROUP: Any = None
_WRITING: Future | None = None  # the background save still writing, if any


def _checkpoint_group() -> Any:
    """A background save plans its files with collectives from its own thread: on a
    process group of its own, so they never interleave with the training's."""
    global _GROUP
    if not dist.is_initialized():
        return None
    if _GROUP is None:
        _GROUP = dist.new_group(backend="gloo")
    return _GROUP


def load_shards(
    directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None
) -> None:
    """Read a sharded checkpoint into `model` (and `optimizer`), whatever their sharding
    now: each rank reads the slices it holds."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_state_dict,
        set_model_state_dict,
        set_state_dict,
    )

    target = str(Path(directory) / SHARDS_DIR)
    if optimizer is None:
        model_state = get_model_state_dict(model)
        with _one_process_quietly():
            dcp.load(
                {"model": model_state}, checkpoint_id=target, no_dist=not dist.is_initialized()
            )
        set_model_state_dict(model, model_state)
        return
    model_state, optimizer_state = get_state_dict(model, optimizer)
    with _one_process_quietly():
        dcp.load(
            {"model": model_state, "optimizer": optimizer_state},
            checkpoint_id=target,
            no_dist=not dist.is_initialized(),
        )
    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optimizer_state)


@contextlib.contextmanager
def _one_process_quietly() -> Iterator[None]:
    """DCP warns that it assumes one process wherever no process group exists: on the
    driver and in a one-worker job, that is the intent."""
    with warnings.catch_warnings():
        if not dist.is_initialized():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield
