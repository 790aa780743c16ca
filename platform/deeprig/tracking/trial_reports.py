"""How a search trial's reports become MLflow points: a light type, so that each kind of
search base (runners/tune) states it without importing Ray Tune or MLflow, and the
driver's Tune callback (tracking/trials.py) reads it as it is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrialReports:
    # A result's step (its epoch, 0-based, or its iteration), given how many results the
    # trial has reported so far in this driver.
    step_of: Callable[[dict[str, Any], int], int]
    # Keys of the trial's reports that are markers, not metrics.
    markers: frozenset[str] = frozenset()
    # The key whose value, when present, is the unix time the point was measured at.
    timestamp_key: str | None = None
