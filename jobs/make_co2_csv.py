"""Write the Mauna Loa CO2 series as CSV, the input of jobs/series_lstm.yaml.

    pip install statsmodels              # ships the data set (no download)
    python jobs/make_co2_csv.py          # -> jobs/data/co2.csv
    python jobs/make_co2_csv.py OUT.csv

statsmodels' `co2`: weekly atmospheric CO2 (ppm) at Mauna Loa, March 1958 - December
2001, 2,284 weeks. The 59 missing weeks are filled by linear interpolation in time, so
the windows are evenly spaced. Columns `week` (its date) and `co2`.
"""

from __future__ import annotations

import sys
from pathlib import Path


def write_co2_csv(out: Path) -> Path:
    from statsmodels.datasets import co2

    series = co2.load_pandas().data["co2"].interpolate(method="time")
    out.parent.mkdir(parents=True, exist_ok=True)
    series.rename_axis("week").reset_index().to_csv(out, index=False)
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data/co2.csv"
    print(f"wrote {write_co2_csv(target)}")
