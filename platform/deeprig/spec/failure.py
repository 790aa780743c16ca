"""`failure:` of a train spec: the restarts a job may spend, on which failure classes, and
how long its workers may wait for room."""

from __future__ import annotations

from pydantic import Field

from deeprig.failures import RETRIED_BY_DEFAULT, FailureClass
from deeprig.spec.common import StrictModel


class FailureSpec(StrictModel):
    max_failures: int = Field(
        default=0,
        ge=-1,
        description=(
            "Worker-group restarts from the latest checkpoint (-1: unlimited), spent only on "
            "failures of a class in `retry_on`."
        ),
    )
    retry_on: list[FailureClass] | None = Field(
        default=None,
        description=(
            "The failure classes a restart is spent on (the run's `deeprig.failure` tag). "
            f"Omitted: {', '.join(RETRIED_BY_DEFAULT)}, what a restart can cure; any other "
            "failure (e.g. user_code, non_finite_loss) ends the job at once."
        ),
    )
    wait_for_resources_s: float = Field(
        default=300.0,
        ge=0.0,
        description=(
            "How long the workers may wait for room (a node lost, none joined; an elastic "
            "job below `min`) before the job fails as worker_lost, naming the lost nodes and "
            "what it lacks. A fixed-size job learns it at each worker-group start attempt "
            "(every 60 s, Ray Train's start timeout)."
        ),
    )
