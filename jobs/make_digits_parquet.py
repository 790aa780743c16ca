"""Write scikit-learn's digits as Parquet, the input of jobs/parquet_digits_gru.yaml.

    python jobs/make_digits_parquet.py            # -> jobs/data/digits.parquet
    python jobs/make_digits_parquet.py OUT.parquet

Columns: `pixels` (a fixed-size list of 64 floats, one image row after another),
`p0`..`p63` (the same values as scalar columns) and `digit` (the class id, 0-9).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.datasets import load_digits


def write_digits_parquet(path: Path) -> Path:
    digits = load_digits()
    flat = (digits.data / 16.0).astype(np.float32)  # (1797, 64)
    columns = {
        "pixels": pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), 64),
        **{f"p{i}": pa.array(flat[:, i]) for i in range(flat.shape[1])},
        "digit": pa.array(digits.target.astype(np.int64)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data/digits.parquet"
    print(f"wrote {write_digits_parquet(out)}")
