"""A data function's DataFrame is standardised as a Parquet table is: statistics fitted on
its training split, in the columns' own units, on the driver (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
from deeprig.data import build_datasets, describe_data
from deeprig.spec.data import PythonData

WINE_DATA = """
from sklearn.datasets import load_wine


def load():
    return load_wine(as_frame=True).frame  # raw columns: proline ~750, hue ~1
"""


@pytest.fixture
def wine_table(tmp_path, monkeypatch) -> tuple[PythonData, list[str]]:
    """scikit-learn's raw wine columns (classes 0, 1, 2) from a data function."""
    from sklearn.datasets import load_wine

    (tmp_path / "winedata.py").write_text(WINE_DATA)
    monkeypatch.syspath_prepend(str(tmp_path))
    features = list(load_wine().feature_names)
    spec = PythonData(source="python", target="winedata:load", features=features, label="target")
    return spec, features


def test_a_data_functions_table_is_standardised_like_parquet(wine_table):
    spec, features = wine_table
    info = describe_data(spec)
    assert info.task == "classification" and info.input_shape == (len(features),)
    prepared = build_datasets(spec, info, seed=0, num_workers=1, data_cpus=1.0, in_memory=True)
    fitted = prepared.fitted
    assert fitted.fitted_on_rows == info.num_train == 142
    assert len(fitted.input_mean) == len(features)
    assert 600 < fitted.input_mean[features.index("proline")] < 900  # raw units
    assert prepared.arrays is not None
    train_x = prepared.arrays["train"][0]
    np.testing.assert_allclose(train_x.mean(axis=0), 0, atol=1e-4)  # standardised
    np.testing.assert_allclose(train_x.std(axis=0), 1, atol=1e-2)
