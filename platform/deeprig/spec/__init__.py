"""The job spec: pydantic models, YAML loading, overrides and error reporting.

This package is the only place that reads YAML. Everything past `load_spec` works on
typed, validated spec objects.
"""

from deeprig.spec.errors import Problem, SpecError
from deeprig.spec.loader import JobSpec, load_spec, load_spec_text
from deeprig.spec.train import TrainSpec
from deeprig.spec.tune import TuneSpec

__all__ = [
    "JobSpec",
    "Problem",
    "SpecError",
    "TrainSpec",
    "TuneSpec",
    "load_spec",
    "load_spec_text",
]
