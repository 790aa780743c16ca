"""A predict job made from arguments: `deeprig predict`'s command line, or a
`deeprig.predict` call."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from deeprig.spec.predict import PredictSpec

if TYPE_CHECKING:
    from rich.console import Console

    from deeprig.runners.contract import Job


def predict_spec(model: str, input: str, output: str, **options: Any) -> PredictSpec:
    """The `kind: predict` spec of a `deeprig predict` command line or a `deeprig.predict`
    call (options: the spec's fields, `experiment` and `tracking_uri` among them);
    SpecError naming the fields at fault."""
    from deeprig.spec.loader import validate_mapping

    experiment = options.pop("experiment", None)
    tracking_uri = options.pop("tracking_uri", None)
    raw: dict[str, Any] = {"kind": "predict", "model": model, "input": input, "output": output}
    raw |= {k: v for k, v in options.items() if v is not None}
    tracking = {k: v for k, v in (("experiment", experiment), ("uri", tracking_uri)) if v}
    if tracking:
        raw["tracking"] = tracking
    spec = validate_mapping(raw)
    assert isinstance(spec, PredictSpec)
    return spec


def command_job(spec: PredictSpec, console: Console, address: str | None, verbose: bool) -> Job:
    """The Job of a predict spec made from arguments: its YAML is what the run records, so
    `deeprig run` of that file repeats it."""
    import yaml

    from deeprig.runners.contract import Job

    text = "# deeprig predict\n" + yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
    return Job(
        spec_text=text,
        spec_path=Path("deeprig-predict"),
        address=address,
        verbose=verbose,
        console=console,
    )
