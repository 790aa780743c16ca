"""What a process needs to reach deeprig's Ray: the environment its jobs run in, and Ray's
auth token. A leaf: the modules that start, join or submit to a cluster all read it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Ray Train V2's controller polls workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s by
# default), and each `ray.train.report` waits for that poll: reporting every epoch then
# costs ~1.9 s an epoch (measured on 2 CPUs). 0.1 s makes a report cost ~0.02 s.
# Ray Data logs each dataset execution from its own actors, and warns that progress bars
# are off (deeprig turns them off: it draws its own progress); errors still show.
# Ray's own actors warn about Ray's own deprecated internals (RayDeprecationWarning).
# MLflow logs its database migrations at INFO and prints a "View run" link per run it ends;
# deeprig prints the run and its link itself.
RAY_JOB_ENV = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
    "RAY_DATA_LOG_LEVEL": "ERROR",
    "PYTHONWARNINGS": "ignore::DeprecationWarning",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


def use_token_auth_if_available() -> None:
    """Ray 2.60 turns token authentication on for clusters it starts; a client connecting to
    one must present the token (from $RAY_AUTH_TOKEN or ~/.ray/auth_token). Ray's clients
    default to no auth, so opt in whenever a token is at hand, unless the user decided."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if os.environ.get("RAY_AUTH_TOKEN") or token_file.exists():
        os.environ["RAY_AUTH_MODE"] = "token"
        if "ray" in sys.modules:
            # Ray reads the mode into its config when imported; refresh it, as Ray's own
            # `_enable_token_auth` does.
            from ray._raylet import Config  # type: ignore[attr-defined]  # (Cython: no stub)

            Config.initialize("")


def ensure_ray_token() -> None:
    """`ray start --head` turns token authentication on only when a token already exists
    (`ray.init` makes one): on a fresh machine the cluster would let anyone in. Make
    Ray's own token first, unless the user set RAY_AUTH_MODE themselves."""
    if "RAY_AUTH_MODE" in os.environ or os.environ.get("RAY_AUTH_TOKEN"):
        return
    ray_cli = Path(sys.executable).parent / "ray"
    subprocess.run(
        [str(ray_cli), "get-auth-token", "--generate"],
        check=True,
        stdout=subprocess.DEVNULL,  # (it prints the token)
        stderr=subprocess.DEVNULL,
        timeout=60,
    )
