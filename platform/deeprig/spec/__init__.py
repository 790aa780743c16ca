"""The job spec: pydantic models, YAML loading, overrides and error reporting.

This package is the only place that reads YAML. Everything past `load_spec` works on
typed, validated spec objects.
"""

from deeprig.spec.errors import Problem, SpecError
from deeprig.spec.loader import load_spec, load_spec_text
from deeprig.spec.models import JobSpec, TrainSpec

__all__ = ["JobSpec", "Problem", "SpecError", "TrainSpec", "load_spec", "load_spec_text"]
