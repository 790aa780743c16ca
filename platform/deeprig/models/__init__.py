"""Model registry: architectures looked up by their spec config class. Model files hold
architecture only (no Ray, no MLflow), so they can be built anywhere: a worker, the
driver, a notebook."""

from deeprig.models.registry import ARCHITECTURES, build_model, check_input_shape
from deeprig.models.shapes import InputShapeError

__all__ = ["ARCHITECTURES", "InputShapeError", "build_model", "check_input_shape"]
