"""`RUNNERS`, the one table of kinds: the CLI, `deeprig validate`, `deeprig runs`, the
cluster checks and a search look a kind up here and nowhere else. Each row holds every fact
about its kind (runners/contract.py `Runner`): `check(spec, resources) -> Checked`,
`run(spec, job) -> Outcome`, what `--resume` continues, where its checkpoints must live on
a cluster, its key metrics, and how a search runs over it.
"""

from __future__ import annotations

from typing import Any

from deeprig.cluster.preflight import CheckpointStorage
from deeprig.runners import predict, rl, train, tune
from deeprig.runners.contract import Runner
from deeprig.runners.tune.rl_trial import RL_BASE
from deeprig.runners.tune.train_trial import TRAIN_BASE
from deeprig.spec.rl import RLSpec
from deeprig.spec.train import TrainSpec
from deeprig.spec.tune import TuneSpec


def _train_storage(spec: TrainSpec) -> CheckpointStorage:
    return CheckpointStorage("checkpoint.storage", spec.checkpoint.storage)


def _rl_storage(spec: RLSpec) -> None:
    return None  # the driver keeps an rl job's checkpoints (and MLflow a copy)


def _search_storage(spec: TuneSpec) -> CheckpointStorage | None:
    """A search's trials keep their checkpoints where its base's kind keeps them."""
    base = RUNNERS[spec.base.kind].storage(spec.base)
    return base.under("base") if base else None


RUNNERS: dict[str, Runner[Any]] = {
    "train": Runner(
        check=train.check,
        run=train.run,
        resumes=train.RESUMES,
        storage=_train_storage,
        key_metrics=("val_accuracy", "val_rmse", "val_loss"),
        search_base=TRAIN_BASE,
    ),
    "tune": Runner(
        check=tune.check,
        run=tune.run,
        resumes=tune.RESUMES,
        storage=_search_storage,
        key_metrics=("best_val_accuracy", "best_val_rmse", "best_val_loss"),
        search_base=None,  # a search over searches: spec/tune.py's base union refuses it
    ),
    "rl": Runner(
        check=rl.check,
        run=rl.run,
        resumes=rl.RESUMES,
        storage=_rl_storage,
        key_metrics=("episode_return_mean",),
        search_base=RL_BASE,
    ),
    "predict": Runner(
        check=predict.check,
        run=predict.run,
        resumes=predict.RESUMES,
        storage=lambda spec: None,  # no checkpoints: the driver writes the output
        key_metrics=("accuracy", "rmse", "rows_per_s"),
        search_base=None,  # nothing to search over
    ),
}


def key_metrics_by_kind() -> dict[str, tuple[str, ...]]:
    """Each kind's key metrics, for listings of runs recorded before the key metric tag."""
    return {kind: row.key_metrics for kind, row in RUNNERS.items()}


__all__ = ["RUNNERS", "key_metrics_by_kind"]
