"""Imports a run's wind-down needs, made while it trains."""

from __future__ import annotations

import threading


def warm_up_result_logging() -> threading.Thread:
    """Import, in a background thread, what logging a run's results needs while the driver
    waits for its workers: matplotlib's Agg backend, mlflow.pytorch and torch.export's
    tracer (its first use imports dynamo, 2.7 s of the quickstart's ~4.8 s wind-down). A/B
    on 2 CPUs, 3 runs each: wind-down 2.5-3.2 s against 4.8-4.9 s, worker start ~1 s
    slower (the imports share the CPUs), whole run ~2 s shorter. Python's import lock
    makes a later import in the main thread wait for this one."""

    def imports() -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot  # noqa: F401
            import mlflow.pytorch  # noqa: F401
            import torch.export._trace  # noqa: F401
        except Exception:  # noqa: BLE001 - a failed warm-up costs only the time it saved
            pass

    thread = threading.Thread(target=imports, name="deeprig-warm-up", daemon=True)
    thread.start()
    return thread
