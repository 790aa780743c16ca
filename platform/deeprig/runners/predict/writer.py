"""The output file: checked before Ray starts (new, or `overwrite`, in a writable folder),
then written batch by batch under a temporary name and renamed when complete, so an
interrupted job leaves no file under the output's name."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from deeprig.spec.errors import Problem, SpecError
from deeprig.spec.predict import PredictSpec


def check_output(spec: PredictSpec) -> None:
    output = Path(spec.output)
    if output.exists() and not spec.overwrite:
        raise SpecError(
            [
                Problem(
                    "output",
                    f"{output} exists; choose another path or replace it with --overwrite "
                    "(overwrite: true)",
                )
            ]
        )
    folder = output.resolve().parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise SpecError([Problem("output", f"cannot write in {folder}: not a writable folder")])


class OutputWriter:
    """Arrow batches appended to a hidden temporary file beside `path` (Parquet, or CSV
    for a .csv path), renamed to `path` when the block ends without an error; removed
    otherwise."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.temporary = self.path.with_name(f".{self.path.name}.partial-{os.getpid()}")
        self.csv = self.path.suffix.lower() == ".csv"
        self.writer: Any = None
        self.schema: Any = None

    def __enter__(self) -> OutputWriter:
        return self

    def write(self, batch: Any) -> None:
        if self.writer is None:
            self.schema = batch.schema
            if self.csv:
                import pyarrow.csv as pacsv

                self.writer = pacsv.CSVWriter(str(self.temporary), self.schema)
            else:
                import pyarrow.parquet as pq

                self.writer = pq.ParquetWriter(str(self.temporary), self.schema)
        self.writer.write_table(batch.cast(self.schema))

    def __exit__(self, kind: Any, *rest: Any) -> None:
        if self.writer is not None:
            self.writer.close()
        if kind is None and self.writer is not None:
            os.replace(self.temporary, self.path)
        else:
            with contextlib.suppress(FileNotFoundError):
                self.temporary.unlink()
