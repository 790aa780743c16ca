"""What runs on each training worker: pure torch plus `ray.train` calls. Knows nothing of
YAML, job submission or the MLflow server; rank 0 reports through an injected sink."""
