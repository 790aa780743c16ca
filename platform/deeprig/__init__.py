"""deeprig: a deep-learning training platform on Ray. One YAML job spec, every run in MLflow."""

__version__ = "0.1.0"
