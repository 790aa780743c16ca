"""A Parquet or CSV table (file, folder or URI) holding the model's feature columns, or
its text column: checked against them before Ray starts (missing columns, wrong types, no
rows), streamed by Ray Data's readers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deeprig.runners.predict.inputs import BadRows, PredictInput, block_rows
from deeprig.spec.errors import Problem, SpecError

if TYPE_CHECKING:
    import pandas as pd

    from deeprig.runners.predict.model import PredictModel
    from deeprig.spec.predict import PredictSpec


def check_table(spec: PredictSpec, model: PredictModel) -> PredictInput:
    """The input's columns against the model's: missing ones, wrong types, no rows."""
    import pyarrow as pa

    from deeprig.data.info import DataProblem
    from deeprig.data.parquet import open_table

    if model.config.get("inputs") not in ("columns", "text"):
        raise SpecError(
            [
                Problem(
                    "model",
                    f"this model reads arrays of shape {model.input_shape}, not a table's "
                    "columns: predict reads arrays from image and audio folders and series, "
                    "for a model whose train run recorded that data source",
                )
            ]
        )
    try:
        dataset = open_table(spec.input, field="input")
    except DataProblem as exc:
        raise SpecError([Problem(exc.path, str(exc))]) from None
    schema = dataset.schema
    reads = model.reads()
    problems = []
    missing = [c for c in reads if c not in schema.names]
    if missing:
        problems.append(
            Problem(
                "input",
                f"column(s) {missing} missing from {spec.input!r}: the model reads "
                f"{', '.join(reads)} (the input has {', '.join(schema.names[:20])})",
            )
        )
    rows = dataset.count_rows()
    if rows == 0:
        raise SpecError([Problem("input", f"{spec.input!r} holds no rows")])
    wants_text = model.config.get("inputs") == "text"
    wrong = []
    for name in (c for c in reads if c in schema.names):
        kind = schema.field(name).type
        numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
        text = pa.types.is_string(kind) or pa.types.is_large_string(kind)
        if (text if wants_text else numeric or pa.types.is_boolean(kind)) is False:
            wrong.append(f"{name} ({kind})")
    if wrong:
        needed = "text" if wants_text else "numbers"
        problems.append(Problem("input", f"column(s) {', '.join(wrong)} hold no {needed}"))
    absent_ids = [c for c in spec.id_columns if c not in schema.names]
    if absent_ids:
        problems.append(Problem("id_columns", f"column(s) {absent_ids} not in {spec.input!r}"))
    if problems:
        raise SpecError(problems)
    label = model.label if model.label in schema.names else None
    names = [*spec.id_columns, *reads, *([label] if label else [])]
    columns = {n: str(schema.field(n).type) for n in dict.fromkeys(names)}
    return PredictInput(list(dataset.files), columns, rows, label, list(spec.id_columns))


def table_rows(
    spec: PredictSpec, model: PredictModel, found: PredictInput, read_cpus: float
) -> Any:
    from deeprig.data.parquet import open_table, read_rows

    dataset = read_rows(spec.input, list(found.columns), num_cpus=read_cpus)
    # A file reads as one block however long, and the pool gives each actor whole blocks:
    # the read cuts its blocks at block_rows rows' bytes (Ray Data's target block size, for
    # this dataset only: a copy of the context), so that every actor has work. (No
    # repartition: that is an operator of its own, whose tasks each ask for a whole CPU.)
    sample = open_table(spec.input, field="input").head(1024, columns=list(found.columns))
    row_bytes = max(1, sample.nbytes // max(sample.num_rows, 1))
    rows = block_rows(found.rows, spec.workers, spec.batch_size)
    dataset.context.target_max_block_size = row_bytes * rows
    return dataset


def table_features(model: PredictModel, batch: pd.DataFrame) -> tuple[Any, BadRows]:
    return batch[model.reads()], []
