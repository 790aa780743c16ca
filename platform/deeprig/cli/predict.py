"""`deeprig predict`: a trained model scores new rows (runners/predict/), recorded as a
predict run in MLflow."""

from __future__ import annotations

from pathlib import Path

import typer

from deeprig.cli.common import bad_spec, console, run_to_its_end
from deeprig.cluster.session import job_address
from deeprig.spec import SpecError


def predict(
    model: str = typer.Argument(
        ...,
        help="A train run's id, runs:/ID/model, models:/NAME/VERSION, models:/NAME@ALIAS, "
        "or a train checkpoint folder.",
    ),
    input: str = typer.Argument(
        ...,
        help="What the model trained on, laid out the same: a Parquet/CSV table (file, folder "
        "or URI), an image or audio folder, a series.",
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Predictions: .csv writes CSV, anything else Parquet."
    ),
    batch_size: int = typer.Option(1024, help="Rows per model call."),
    workers: int = typer.Option(1, help="Actors, each loading the model once."),
    gpus_per_worker: float = typer.Option(0.0, help="GPUs of each actor."),
    proba: bool = typer.Option(False, "--proba", help="Add one proba_<class> column per class."),
    id_columns: str = typer.Option(
        None, help="Input columns copied beside each prediction: c1,c2."
    ),
    experiment: str = typer.Option(None, help="MLflow experiment (default: the model's)."),
    tracking_uri: str = typer.Option(None, help="MLflow store (default: as for `run`)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
    skip_bad_rows: bool = typer.Option(
        False,
        "--skip-bad-rows",
        help="Leave out rows found unreadable mid-stream (counted, listed on the run); "
        "without it such a row fails the job.",
    ),
    log_output: bool = typer.Option(
        False, "--log-output", help="Log the output on the run (under 100 MiB)."
    ),
    address: str = typer.Option(
        None, help="Ray cluster to run on; omitted: a local Ray is started."
    ),
    verbose: bool = typer.Option(
        False, "--verbose", help="Show Ray's and MLflow's own messages here too."
    ),
) -> None:
    """Score new rows with a trained model on Ray Data; record a predict run.

    The input is checked against the model before Ray starts (exit 2 naming what
    is missing). The output holds the id columns (an image's or clip's `path`, a
    series window's last `row`), the label when the input has it, `prediction`
    and, with --proba, proba_<class> columns; with labels the run records the
    scores (accuracy, f1_macro / rmse).

    Example: deeprig predict models:/wine@champion new.csv -o out.csv --proba
    """
    from deeprig.runners.predict import command_job, predict_spec, run

    try:
        spec = predict_spec(
            model,
            input,
            str(output),
            batch_size=batch_size,
            workers=workers,
            gpus_per_worker=gpus_per_worker,
            proba=proba,
            id_columns=[c.strip() for c in id_columns.split(",")] if id_columns else None,
            overwrite=overwrite,
            skip_bad_rows=skip_bad_rows,
            log_output=log_output,
            experiment=experiment,
            tracking_uri=tracking_uri,
        )
    except SpecError as exc:
        bad_spec(exc, Path("deeprig predict"))
    job = command_job(spec, console, job_address(address), verbose)
    run_to_its_end(
        lambda: run(spec, job),
        job.home,
        "predict",
        verbose,
        Path("deeprig predict"),
        "no output written; the MLflow run is KILLED",
    )
