"""Work a job's driver can do early, in a background thread, while it waits on Ray: the
tracking store's start while Ray starts, the wind-down's imports while the workers start."""

from __future__ import annotations

import threading

from deeprig.tracking.store import TrackingTarget, prepare_store


def warm_up_store(target: TrackingTarget) -> threading.Thread:
    """Start the tracking store in a background thread while Ray starts: MLflow's SQL
    store (its SQLAlchemy models, ~1.1 s of imports and mapper set-up on 2 CPUs; a new
    embedded store's migrations, ~2.3 s) is made once per process and cached, so the
    run's creation after `ray.init` finds it ready. For a tracking server it is a cheap
    first request. Python's import lock makes the main thread wait for a module this
    thread is still importing, never import it twice. A server that does not answer is
    asked with MLflow's retries cut to seconds: the run's creation waits for this thread."""
    if target.uri.startswith("http"):
        from deeprig.tracking.outbox import short_client_retries

        short_client_retries()

    def start() -> None:
        try:
            from mlflow import MlflowClient

            prepare_store(target)
            MlflowClient(target.uri).search_experiments(max_results=1)
        except Exception:  # noqa: BLE001 - the run's creation reports any real problem
            pass

    thread = threading.Thread(target=start, name="deeprig-store-warm-up", daemon=True)
    thread.start()
    return thread


def warm_up_result_logging() -> threading.Thread:
    """Import, in a background thread, what logging a run's results needs while the driver
    waits for its workers: matplotlib's Agg backend, mlflow.pytorch, MLflow's map of
    installed packages and torch.export's tracer (its first use imports dynamo, 2.7 s of
    the quickstart's ~4.8 s wind-down). A/B on 2 CPUs, 3 runs each: wind-down 2.5-3.2 s
    against 4.8-4.9 s, worker start ~1 s slower (the imports share the CPUs), whole run
    ~2 s shorter; the package map, 2.2-2.4 s against 2.7-2.8 s. Python's import lock
    makes a later import in the main thread wait for this one."""

    def imports() -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot  # noqa: F401
            import mlflow.pytorch  # noqa: F401
            import torch.export._trace  # noqa: F401

            # log_model checks the declared requirements against what is installed, and
            # its first check maps every installed distribution to its modules (0.4-0.8 s
            # here). Private to MLflow: should it move, the warm-up only does less.
            from mlflow.utils import requirements_utils

            requirements_utils._init_packages_to_modules_map()
        except Exception:  # noqa: BLE001 - a failed warm-up costs only the time it saved
            pass

    thread = threading.Thread(target=imports, name="deeprig-warm-up", daemon=True)
    thread.start()
    return thread
