"""Data description and the deterministic split."""

from __future__ import annotations

import numpy as np
from deeprig.data import describe_data
from deeprig.data.builtin import split_indices, synthetic_arrays
from deeprig.spec.data import DigitsData, ParquetData, SyntheticData


def test_split_is_deterministic_by_seed():
    a_train, a_val = split_indices(1000, 0.2, seed=3)
    b_train, b_val = split_indices(1000, 0.2, seed=3)
    _, c_val = split_indices(1000, 0.2, seed=4)
    assert np.array_equal(a_val, b_val) and np.array_equal(a_train, b_train)
    assert not np.array_equal(a_val, c_val)


def test_split_is_disjoint():
    train, val = split_indices(1000, 0.2, seed=3)
    assert len(val) == 200 and not set(train) & set(val)


def test_digits_are_8x8_images_of_10_classes():
    info = describe_data(DigitsData(source="builtin:digits"))
    assert info.input_shape == (8, 8) and info.num_outputs == 10 and info.num_rows == 1797


SYNTHETIC_REGRESSION = SyntheticData(
    source="builtin:synthetic", num_samples=300, shape=[4, 5], num_classes=0
)


def test_synthetic_data_of_any_size():
    x, _ = synthetic_arrays(SYNTHETIC_REGRESSION, seed=1)
    assert x.shape == (300, 4, 5)


def test_synthetic_data_without_classes_is_regression():
    _, y = synthetic_arrays(SYNTHETIC_REGRESSION, seed=1)
    assert y.dtype == np.float32
    assert describe_data(SYNTHETIC_REGRESSION).task == "regression"


def test_parquet_list_column_with_feature_shape(digits_parquet):
    spec = ParquetData(
        source="parquet",
        path=str(digits_parquet),
        features=["pixels"],
        label="digit",
        feature_shape=[8, 8],
    )
    info = describe_data(spec)
    assert info.input_shape == (8, 8) and info.task == "classification"
    assert info.num_outputs == 10


def test_parquet_scalar_columns_as_regression(digits_parquet):
    spec = ParquetData(
        source="parquet", path=str(digits_parquet), features=["p1", "p2"], label="p3"
    )
    info = describe_data(spec)
    assert info.input_shape == (2,) and info.task == "regression" and info.num_outputs == 1
