"""The user's own Ray Train loop (`loop.function`), run on every worker unchanged.

The function gets exactly `loop.config` as its config and calls only Ray's API
(`ray.train.get_dataset_shard`, `prepare_model`, `report`, `get_checkpoint`); deeprig
puts the user's code on the worker's path first and resolves the function there, so
nothing of the user's is pickled by reference on the driver.
"""

from __future__ import annotations

import logging
from typing import Any

# The key of the train loop config under which deeprig passes its own part (removed
# before the user's function sees the config).
DEEPRIG_KEY = "__deeprig__"


def user_loop_per_worker(config: dict[str, Any]) -> None:
    """Entry point of a Ray Train worker running the user's loop."""
    from deeprig.usercode import resolve_target

    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    own = config[DEEPRIG_KEY]
    own["code"].install()
    function = resolve_target(own["function"], "loop.function")
    function({k: v for k, v in config.items() if k != DEEPRIG_KEY})
