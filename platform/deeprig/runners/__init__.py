"""One runner per kind of work: spec in, Ray library call out, MLflow run recorded.

`RUNNERS` is the one table of kinds: the CLI, `deeprig validate` and the cluster checks
look a kind up here and nowhere else. Each row offers the contract of runners/contract.py:
`check(spec, resources) -> Checked` and `run(spec, job) -> Outcome`.
"""

from __future__ import annotations

from deeprig.runners import rl, train, tune
from deeprig.runners.contract import Job, Runner

RUNNERS: dict[str, Runner] = {
    "train": Runner(check=train.check, run=train.run, resumes=train.RESUMES),
    "tune": Runner(check=tune.check, run=tune.run, resumes=tune.RESUMES),
    "rl": Runner(check=rl.check, run=rl.run, resumes=rl.RESUMES),
}

__all__ = ["RUNNERS", "Job", "Runner"]
