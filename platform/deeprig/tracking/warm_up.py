"""Imports a run's wind-down needs, made while it trains."""

from __future__ import annotations

import threading


def warm_up_result_logging() -> threading.Thread:
    """Import, in a background thread, what logging a run's results needs (matplotlib's Agg
    backend, torch.export, mlflow.pytorch: ~2 s of imports on 2 CPUs) while the driver waits
    for its workers, so that the wind-down after the last epoch does not pay for them.
    Python's import lock makes a later import in the main thread wait for this one."""

    def imports() -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot  # noqa: F401
            import mlflow.pytorch  # noqa: F401
            import torch.export  # noqa: F401
        except Exception:  # noqa: BLE001 - a failed warm-up costs only the time it saved
            pass

    thread = threading.Thread(target=imports, name="deeprig-warm-up", daemon=True)
    thread.start()
    return thread
