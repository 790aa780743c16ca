"""Why a job ended: one classification (`FailureClass`), carried by one picklable exception
(`JobFailure`) from wherever it was found to the run's tag, the exit code and the message.

`classes.py` holds the classes and what deeprig knows of each (`FAILURES`), and
`JobFailure`; `classification.py` finds a failure's class by type along what wraps it, else
by whose frames raised it (the user's, or the data's reading); `retry.py` decides whether
a restart is spent on it (`RetryPolicy`). Importing it imports neither Ray nor torch: every
package may import it.
"""

from deeprig.failures.classes import (
    FAILURES,
    RETRIED_BY_DEFAULT,
    FailureClass,
    FailureFacts,
    JobFailure,
)
from deeprig.failures.classification import (
    UserCode,
    classified,
    classify,
    classify_ranks,
)
from deeprig.failures.retry import LogRule, RetryPolicy, retry_classes

__all__ = [
    "FAILURES",
    "RETRIED_BY_DEFAULT",
    "FailureClass",
    "FailureFacts",
    "JobFailure",
    "LogRule",
    "RetryPolicy",
    "UserCode",
    "classified",
    "classify",
    "classify_ranks",
    "retry_classes",
]
