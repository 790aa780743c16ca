"""The one number that says how good a run is: the value at the checkpoint the run keeps as
its result, logged as its own metric (`best_val_accuracy`, `last_episode_return_mean`) and
named by the run's `deeprig.key_metric` tag, so `deeprig runs`, `deeprig list` and MLflow's
UI show that value, not the last epoch's. Every runner (and a user's loop) records it
through `record_key_metric`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from deeprig.tracking.tags import Tag

if TYPE_CHECKING:
    from deeprig.tracking.null import NullRecorder
    from deeprig.tracking.runs import RunRecorder

# Where the value comes from: the best checkpoint by the job's checkpoint metric (train, a
# search's best trial), or the last one (rl keeps its latest checkpoints).
AT_BEST, AT_LAST = "best", "last"


def record_key_metric(
    recorder: RunRecorder | NullRecorder,
    metric: str,
    value: float,
    at: str = AT_BEST,
    step: int = 0,
) -> str:
    """Log `value` of `metric` at the kept checkpoint as `<at>_<metric>` and tag the run
    with that name; the name."""
    key = f"{at}_{metric}"
    recorder.log_metrics({key: float(value)}, step=step)
    recorder.set_tags({Tag.KEY_METRIC: key})
    return key


def key_metric(
    tags: Mapping[str, str],
    metrics: Mapping[str, float],
    untagged: Mapping[str, Sequence[str]],
) -> tuple[str, float] | None:
    """(the run's key metric, its value): the tagged one, else for an older run the first
    its kind names in `untagged` (kind -> metrics, most telling first: the runner table's
    key_metrics; every kind's for a run without a kind) that it has; None when it has none
    of them."""
    tagged = tags.get(Tag.KEY_METRIC)
    if tagged and tagged in metrics:
        return tagged, metrics[tagged]
    kind = tags.get(Tag.KIND, "")
    names = untagged[kind] if kind in untagged else [n for ns in untagged.values() for n in ns]
    found = next((k for k in names if k in metrics), None)
    return (found, metrics[found]) if found else None


def label(key: str) -> str:
    """How a table names a key metric: `best val_accuracy`, `last episode_return_mean`."""
    for at in (AT_BEST, AT_LAST):
        if key.startswith(f"{at}_"):
            return f"{at} {key.removeprefix(f'{at}_')}"
    return key
