"""Everything MLflow: where the store is, run records, lineage, artifacts, the registry.

The driver creates and finishes runs; rank 0 of a training job logs per-epoch metrics
through `MlflowMetricsSink`. Nothing else writes to MLflow.
"""

from deeprig.tracking.store import TrackingTarget, deeprig_home

__all__ = ["TrackingTarget", "deeprig_home"]
