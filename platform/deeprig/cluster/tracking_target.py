"""The one rule every verb follows for where runs are read and written, and which rule chose
the store. It lives with the cluster because one of its steps asks whether this home's
`deeprig cluster up` cluster runs; the stores it chooses among are tracking/store.py's, and
tracking/ asks nothing of cluster/."""

from __future__ import annotations

import os
from pathlib import Path

from deeprig.cluster.local import running_cluster
from deeprig.tracking.auth import sign_in_if_local_server
from deeprig.tracking.store import TRACKING_URI_ENV, TrackingTarget, deeprig_home, embedded_target


def resolve_tracking(
    given_uri: str | None, home: Path | None = None, given_by: str = "spec tracking.uri"
) -> TrackingTarget:
    """Where a command reads and writes runs, for every verb: the URI it was given (spec
    `tracking.uri`, or a verb's --tracking-uri: `given_by` says which) >
    $MLFLOW_TRACKING_URI > the tracking server of the cluster `deeprig cluster up` started
    on this machine (its cluster.json), while it runs > the embedded store. A server this
    home's cluster started is signed in to as its jobs user."""
    home = home or deeprig_home()
    if given_uri:
        uri, chosen_by = given_uri, given_by
    elif os.environ.get(TRACKING_URI_ENV):
        uri, chosen_by = os.environ[TRACKING_URI_ENV], f"${TRACKING_URI_ENV}"
    else:
        cluster = running_cluster(home)
        if cluster is None:
            return embedded_target(home)
        uri, chosen_by = cluster.tracking_uri, "the cluster `deeprig cluster up` started"
    sign_in_if_local_server(uri, home)
    return TrackingTarget(uri, None, chosen_by)
