"""deeprig: a deep-learning training platform on Ray. One YAML job spec, every run in MLflow.

From Python (a notebook), the same code paths as the CLI's; each import is made on call,
so `import deeprig` stays light:
- `deeprig.run(spec_path_or_dict, **overrides)` runs a job (`deeprig run`) and returns its
  outcome (`.run_id`, `.metrics`);
- `deeprig.predict(model, input, ...)` scores a table (`deeprig predict`) and returns the
  predictions as a pandas DataFrame.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__version__ = "0.1.0"


def run(spec: str | Path | dict[str, Any], **overrides: Any) -> Any:
    """Run a job from a spec file or a dict, `overrides` as `--set` would (dotted field
    paths: `deeprig.run("jobs/quickstart.yaml", **{"optim.lr": 0.01})`). Returns the job's
    outcome: `.run_id` and `.metrics` (a search's: `.parent_run_id`, `.best_run_id`).
    Raises `deeprig.spec.SpecError` for a bad spec, the job's failure when it fails."""
    import yaml
    from rich.console import Console

    from deeprig.runners import RUNNERS, Job
    from deeprig.spec import load_spec, load_spec_text

    settings = [f"{key}={yaml.safe_dump(value).strip()}" for key, value in overrides.items()]
    if isinstance(spec, dict):
        text = yaml.safe_dump(spec, sort_keys=False)
        job_spec = load_spec_text(text, settings)
        path = Path.cwd() / f"{job_spec.name}.yaml"
    else:
        path = Path(spec)
        job_spec = load_spec(path, settings)
        text = path.read_text()
    if settings:
        text = yaml.safe_dump(job_spec.model_dump(mode="json"), sort_keys=False)
    job = Job(spec_text=text, spec_path=path, verbose=False, console=Console())
    return RUNNERS[job_spec.kind].run(job_spec, job)


def predict(
    model: str,
    input: str | Path,
    output: str | Path | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Score a table with a trained model (`deeprig predict`, the same code path) and
    return the predictions: the id columns, the label when the input has it, `prediction`
    and, with `proba=True`, `proba_<class>` columns. `output` also writes them to a file
    (else nothing is left on disk). `options`: batch_size, workers, gpus_per_worker,
    proba, id_columns, overwrite, log_output, experiment, tracking_uri. Recorded as a
    predict run. For inputs that fit in memory."""
    import tempfile

    from rich.console import Console

    from deeprig.runners.predict import command_job, predict_spec
    from deeprig.runners.predict import run as run_predict

    with tempfile.TemporaryDirectory(prefix="deeprig-predict-") as scratch:
        target = str(output) if output is not None else str(Path(scratch) / "predictions.parquet")
        spec = predict_spec(model, str(input), target, **options)
        outcome = run_predict(spec, command_job(spec, Console(), None, False), keep_frame=True)
    return outcome.frame
