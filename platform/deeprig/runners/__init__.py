"""One runner per kind of work: spec in, Ray library call out, MLflow run recorded.

`RUNNERS` (runners/kinds.py) is the one table of kinds, also importable from here with
`Job` and `Runner` (runners/contract.py). The package imports them on first use: a Ray
Train controller or worker unpickling one small module of it (a controller callback) must
not import every runner, and through them Ray Tune, RLlib's config and the predict job
(a few tenths of a second of CPU in each such process, times three a job).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deeprig.runners.contract import Job, Runner
    from deeprig.runners.kinds import RUNNERS, key_metrics_by_kind

_DEFINED_IN = {
    "RUNNERS": "deeprig.runners.kinds",
    "key_metrics_by_kind": "deeprig.runners.kinds",
    "Job": "deeprig.runners.contract",
    "Runner": "deeprig.runners.contract",
}


def __getattr__(name: str) -> Any:
    if name not in _DEFINED_IN:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_DEFINED_IN[name]), name)


__all__ = ["RUNNERS", "Job", "Runner", "key_metrics_by_kind"]
