"""Checkpoint I/O: one file holding all that resuming needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FILE = "checkpoint.pt"


def save_state(directory: str | Path, state: dict[str, Any]) -> None:
    torch.save(state, Path(directory) / CHECKPOINT_FILE)


def load_state(directory: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    # weights_only=False: the state holds the spec and plain Python values, written by us.
    return torch.load(
        Path(directory) / CHECKPOINT_FILE, map_location=map_location, weights_only=False
    )
