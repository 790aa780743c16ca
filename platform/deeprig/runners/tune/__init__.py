"""`kind: tune`: a TuneSpec -> Ray Tune search whose trials reuse the train or rl kind.

Each trial is a Tune function trainable running the base spec with its values:
- a multi-worker train base builds the same TorchTrainer the train runner builds (Train
  V2's way of running under Tune: `TuneReportCallback` forwards each epoch's report to
  Tune, so ASHA and median stopping act per epoch);
- a single-worker train base runs the same training loop inside the trial itself (no
  worker group per trial, actors reused, checkpoints reported to Tune, which PBT needs);
- an rl base runs the rl runner's RLlib algorithm in the trial, one report an iteration.
MLflow: one parent run per search, one child run per trial (`mlflow.parentRunId`), the
best trial marked on the parent and its model (or rl checkpoint) logged there.

Early-stopped trials end KILLED with the tag `deeprig.stopped_early=true` (MLflow has no
"stopped" status; KILLED is the one that says "did not run to the end", and the tag tells
it apart from a user's Ctrl-C).

The modules: `search` (the runner: check, run), `trial` (what every trial shares),
`train_trial` and `rl_trial` (one per kind of base), `tuner` (the Tuner, its search
algorithm and scheduler), `record` (the search's results on the parent run).
"""

from deeprig.runners.tune.search import RESUMES, check, run
from deeprig.runners.tune.trial import TuneChecked, TuneOutcome

__all__ = ["RESUMES", "TuneChecked", "TuneOutcome", "check", "run"]
