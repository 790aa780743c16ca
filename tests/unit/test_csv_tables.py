"""`source: parquet` reads CSV too: told apart by the files' extension, described and
sampled as Parquet is, bad paths refused with the field."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deeprig.data import DataProblem, describe_data
from deeprig.data.parquet import parquet_samples, table_format
from deeprig.spec.data import ParquetData


def table(path, **fields) -> ParquetData:
    return ParquetData(source="parquet", path=str(path), **fields)


def write_csv(path, rows: int = 6) -> None:
    lines = ["a,b,kind"] + [f"{i},{i * 0.5},{'dog' if i % 2 else 'cat'}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")


def test_the_format_is_the_files_extension(tmp_path):
    (tmp_path / "csvs").mkdir()
    write_csv(tmp_path / "csvs" / "part-0.csv")
    (tmp_path / "mixed").mkdir()
    write_csv(tmp_path / "mixed" / "a.csv")
    pq.write_table(pa.table({"a": [1]}), tmp_path / "mixed" / "b.parquet")
    assert table_format(str(tmp_path / "t.csv")) == "csv"
    assert table_format(str(tmp_path / "t.csv.gz")) == "csv"
    assert table_format(str(tmp_path / "csvs")) == "csv"
    assert table_format(str(tmp_path / "mixed")) == "parquet"
    assert table_format("s3://bucket/rows.parquet") == "parquet"


def test_a_csv_file_is_described_like_parquet(tmp_path):
    write_csv(tmp_path / "rows.csv")
    info = describe_data(table(tmp_path / "rows.csv", features=["a", "b"], label="kind"))
    assert info.task == "classification" and info.classes == ("cat", "dog")
    assert info.input_shape == (2,) and info.num_rows == 6


def test_a_folder_of_csv_files_is_one_table(tmp_path):
    (tmp_path / "parts").mkdir()
    write_csv(tmp_path / "parts" / "0.csv", rows=4)
    write_csv(tmp_path / "parts" / "1.csv", rows=5)
    info = describe_data(table(tmp_path / "parts", features=["a"], label="b"))
    assert info.task == "regression" and info.num_rows == 9


def test_csv_samples_are_float32_in_the_feature_shape(tmp_path):
    write_csv(tmp_path / "rows.csv")
    spec = table(tmp_path / "rows.csv", features=["a", "b"], label="kind")
    samples = parquet_samples(spec, describe_data(spec), 3)
    assert samples.dtype == np.float32
    np.testing.assert_allclose(samples, [[0, 0], [1, 0.5], [2, 1.0]])


def test_a_missing_csv_column_names_the_field_and_what_exists(tmp_path):
    write_csv(tmp_path / "rows.csv")
    with pytest.raises(DataProblem) as caught:
        describe_data(table(tmp_path / "rows.csv", features=["a", "c"], label="kind"))
    assert caught.value.path == "data.features" and "'c'" in str(caught.value)
    assert "a, b, kind" in str(caught.value)


def test_a_missing_csv_file_is_refused(tmp_path):
    with pytest.raises(DataProblem) as caught:
        describe_data(table(tmp_path / "none.csv", features=["a"], label="kind"))
    assert caught.value.path == "data.path" and "none.csv" in str(caught.value)
